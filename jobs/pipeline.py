"""Ray Job entry point: the whole pipeline (ingest, train, evaluate, register, promote, deploy, smoke request).

    ray job submit --address http://HEAD:8265 --runtime-env jobs/runtime_env.yaml -- \
        python jobs/pipeline.py --config configs/flights.yaml [--set key=value ...]
"""

from _entry import main

if __name__ == "__main__":
    main(["run"])
