"""``python -m jobs.inference --host 127.0.0.1 --port P``: run the inference process."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from .app import create_app
from .settings import InferenceSettings


def main(argv: list[str] | None = None) -> None:
    """Parse flags (each overrides its RFT_INFERENCE_* variable) and serve until killed."""
    parser = argparse.ArgumentParser(prog="python -m jobs.inference", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind; keep it loopback, the API is the only client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--memory-budget-mb", type=int)
    parser.add_argument("--load-timeout-s", type=float)
    parser.add_argument("--max-batch-rows", type=int)
    parser.add_argument("--torch-threads", type=int)
    parser.add_argument("--backend", choices=["auto", "transformers", "vllm"])
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in {
        "memory_budget_mb": args.memory_budget_mb, "load_timeout_s": args.load_timeout_s,
        "max_batch_rows": args.max_batch_rows, "backend": args.backend,
        "torch_threads": args.torch_threads,
    }.items() if v is not None}
    settings = InferenceSettings(**overrides)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
