"""Ray Job entry point: training, evaluation and registration.

    ray job submit --address http://HEAD:8265 --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py --config configs/flights.yaml [--set key=value ...]
"""

from _entry import main

if __name__ == "__main__":
    main(["train"])
