"""Ray Job entry point: the ingest only.

    ray job submit --address http://HEAD:8265 --runtime-env jobs/runtime_env.yaml -- \
        python jobs/ingest.py --config configs/flights.yaml [--set key=value ...]
"""

from _entry import main

if __name__ == "__main__":
    main(["ingest"])
