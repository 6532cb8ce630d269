"""`r1f run FLOW --config FILE` and `r1f serve`: the Prefect flows from the command line.

`run` runs one flow of `flows/factory.py` (or the recipe) in Prefect's embedded mode: with no
Prefect API configured, a temporary server is started for the run and stopped at its end
(flows.embedded), so nothing has to be started by hand. `serve` starts Prefect's server on
127.0.0.1 (or uses the one configured) and serves the deployments of `prefect.yaml`: the
cron-scheduled generation and the event-triggered distillation and rejection sampling
(docs/flows.md).

The config is read and checked before Prefect starts, so a mistake in it is one line on stderr
(exit 2), not a failed flow run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.cli.common import UserError, add_command, int_at_least, non_negative_int, print_json


@dataclass(frozen=True)
class FlowCommand:
    """A flow `r1f run` knows: where it lives, which flags it takes, what its config is."""

    module: str
    function: str
    help: str
    flags: tuple[str, ...] = ()  # of table, version, model_dir, out
    required: tuple[str, ...] = ()
    stage_config: bool = False  # a trainer stage config, not a run config


FLOWS: dict[str, FlowCommand] = {
    "generate": FlowCommand(
        "flows.factory",
        "generate",
        "the config's generate: section, one task per shard",
        ("model_dir",),
    ),
    "verify": FlowCommand(
        "flows.factory", "verify", "judge a table (--table, else the config's)", ("table",)
    ),
    "generate-and-verify": FlowCommand(
        "flows.factory",
        "generate_and_verify",
        "generate, then judge (the cron deployment)",
        ("model_dir",),
    ),
    "filter-and-assemble": FlowCommand(
        "flows.factory", "filter_and_assemble", "filter, dedup, decontaminate, assemble; card"
    ),
    "card": FlowCommand(
        "flows.factory",
        "card",
        "render a version's card and publish it as artifacts",
        ("table", "version"),
        ("table",),
    ),
    "train": FlowCommand(
        "flows.factory",
        "train",
        "one trainer stage from its config (pretrain, sft, distill, cold_start, rejection_sft)",
        ("out", "model_dir"),
        stage_config=True,
    ),
    "rl": FlowCommand(
        "flows.factory",
        "rl",
        "one GRPO stage (r1_zero, reasoning_rl, final_rl) from its config",
        ("out", "model_dir"),
        stage_config=True,
    ),
    "distill": FlowCommand(
        "flows.factory",
        "distill",
        "the recipe's student on one mixture version (once per version)",
        ("table", "version", "model_dir"),
        ("table", "version"),
    ),
    "rejection-sampling": FlowCommand(
        "flows.factory",
        "rejection_sampling",
        "sample from a checkpoint, judge, filter, assemble",
        ("model_dir",),
    ),
    "r1-recipe": FlowCommand("flows.recipe", "r1_recipe", "the whole R1 recipe, stage after stage"),
}

_FLAG = {"table": "--table", "version": "--version", "model_dir": "--model-dir", "out": "--out"}


def flow_parameters(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The flow's parameters from the flags; a flag the flow does not take is a mistake."""
    spec = FLOWS[name]
    params: dict[str, Any] = {"config": args.config}
    for key, flag in _FLAG.items():
        value = getattr(args, key)
        if value is None:
            if key in spec.required:
                raise UserError(f"{flag}: the {name} flow needs it")
            continue
        if key not in spec.flags:
            taken = ", ".join(_FLAG[k] for k in spec.flags) or "no flags but --config"
            raise UserError(f"{flag}: the {name} flow does not take it (it takes {taken})")
        params[key] = value
    if "model_dir" in params and name == "distill":
        params["teacher"] = params.pop("model_dir")
    if "model_dir" in params and name in ("rl", "train"):
        params["checkpoint"] = params.pop("model_dir")
    if args.store is not None:
        params["store"] = args.store
    return params


def check_config(spec: FlowCommand, path: str) -> None:
    """Load the config the flow will load: its mistakes surface here, as one line."""
    if spec.function == "rl":
        from flows.train import load_grpo_stage_config

        load_grpo_stage_config(path)
    elif spec.stage_config:
        from flows.train import load_stage_config

        load_stage_config(path)
    else:
        from flows.config import load_run_config

        load_run_config(path)


def _flow(spec: FlowCommand) -> Callable[..., Any]:
    import importlib

    flow: Callable[..., Any] = getattr(importlib.import_module(spec.module), spec.function)
    return flow


def cmd_run(args: argparse.Namespace) -> int:
    spec = FLOWS[args.flow]
    params = flow_parameters(args.flow, args)
    check_config(spec, args.config)
    from flows.embedded import prefect_api

    with prefect_api() as api:
        if not args.json:
            print(f"r1f run {args.flow}: Prefect API {api}", flush=True)
        result = _flow(spec)(**params)
    if args.json:
        print_json(result)
    else:
        print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.environment import set_prefect_environment

    set_prefect_environment()
    from contextlib import ExitStack

    from flows.deployments import (
        deployments_from,
        healthy,
        local_server,
        read_deployments,
        serve_deployments,
    )
    from store.events import api_url

    if args.config is not None:
        check_config(FlowCommand("", "", ""), args.config)
    read_deployments(args.deployments)
    with ExitStack() as stack:
        configured = api_url()
        if configured is not None:
            if not healthy(configured):
                raise UserError(
                    f"PREFECT_API_URL={configured}: no Prefect server answers there "
                    "(unset it to let `r1f serve` start one on 127.0.0.1)"
                )
            api = configured
        else:
            api = stack.enter_context(local_server(args.port))
        import os

        os.environ["PREFECT_API_URL"] = api
        from prefect.settings import PREFECT_API_URL, temporary_settings

        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api}))
        deployments = deployments_from(args.deployments, config=args.config)
        ui = api.removesuffix("/api")

        def ready(count: int) -> None:
            print(
                f"serving {count} deployments of {args.deployments} against {api}; "
                f"the UI is at {ui} (Ctrl-C stops)",
                flush=True,
            )

        serve_deployments(deployments, ready=ready)
    return 0


def register(commands: Any) -> None:
    """Add `run` and `serve` to the top-level subparsers."""
    lines = "\n".join(f"  {name:<20} {spec.help}" for name, spec in FLOWS.items())
    p = add_command(
        commands,
        "run",
        cmd_run,
        "run one Prefect flow in embedded mode (nothing to start by hand)",
        uses_store=True,
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "flows:\n" + lines
    p.add_argument("flow", choices=sorted(FLOWS), metavar="FLOW", help="the flow (see below)")
    p.add_argument(
        "--config", required=True, metavar="FILE", help="run config (train: a stage config)"
    )
    p.add_argument("--table", metavar="NAME", help="verify, card, distill: the table")
    p.add_argument(
        "--version", type=non_negative_int, metavar="V", help="card, distill: the version"
    )
    p.add_argument(
        "--model-dir",
        dest="model_dir",
        metavar="DIR",
        help="generate, rejection-sampling: the checkpoint to sample; distill: the teacher; "
        "rl, train: the checkpoint to start from",
    )
    p.add_argument("--out", metavar="DIR", help="train, rl: the checkpoint directory")

    s = add_command(
        commands,
        "serve",
        cmd_serve,
        "serve the deployments of prefect.yaml against a local Prefect server on 127.0.0.1",
    )
    s.add_argument(
        "--deployments",
        default="prefect.yaml",
        metavar="FILE",
        help="the deployments' declaration (default prefect.yaml)",
    )
    s.add_argument(
        "--config",
        metavar="FILE",
        help="run config every deployment uses (default: each deployment's own)",
    )
    s.add_argument(
        "--port",
        type=int_at_least(1),
        default=4200,
        metavar="N",
        help="port of the server started on 127.0.0.1 (default 4200)",
    )
