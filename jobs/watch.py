"""Ray Job entry point: the closed loop (drift / new data -> retrain -> gate -> canary -> promote
or roll back), as a long-running job, or one look per run with --once (for a schedule).

    ray job submit --address http://HEAD:8265 --runtime-env jobs/runtime_env.yaml -- \
        python jobs/watch.py --config configs/flights.yaml [--once] [--dry-run] [--set key=value ...]
"""

from _entry import main

if __name__ == "__main__":
    main(["watch"])
