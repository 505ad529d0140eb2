"""Ray Job entry point: deploy or update the endpoint (--version to pin a model).

    ray job submit --address http://HEAD:8265 --runtime-env jobs/runtime_env.yaml -- \
        python jobs/deploy.py --config configs/flights.yaml [--set key=value ...]
"""

from _entry import main

if __name__ == "__main__":
    main(["deploy"])
