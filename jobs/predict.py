"""Ray Job entry point: batch inference (--input, --output).

    ray job submit --address http://HEAD:8265 --runtime-env jobs/runtime_env.yaml -- \
        python jobs/predict.py --config configs/flights.yaml [--set key=value ...]
"""

from _entry import main

if __name__ == "__main__":
    main(["predict"])
