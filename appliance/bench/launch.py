"""Servers the bench starts itself, each with its own flags and environment: `--launch`.

Why: comparing configurations of one engine (llama-server with each `--spec-type`, our
appliance with speculation on and off) in one interleaved run means several servers at once,
each started the same way but for one flag or variable. A spec is

    NAME=KIND[,model=ID][,gguf=PATH][,bin=PATH][,spec=TYPE][,threads=N][,ctx=N][,slots=N]
             [,args=EXTRA ARGS][,env.VAR=VALUE][,ref=TARGET]

KIND is `appliance` (`appliance serve --model ID`) or `llama-server` (BIN, default
`--llama-server` or `llama-server` on PATH, serving GGUF, default `--gguf`, under the alias
`model`). `spec=` is llama-server's `--spec-type`; for the appliance it sets
`APPLIANCE_SPEC` (off|ngram), which our engine reads. `ref=` names the target whose outputs
this one's are checked against (the edit workload). Commas separate options, so `args=`
cannot hold one.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

from appliance.bench.serve import ManagedServer, free_port
from appliance.bench.targets import TargetSpecError

KINDS = ("appliance", "llama-server")
SPEC_ENV = "APPLIANCE_SPEC"


@dataclass
class LaunchSpec:
    name: str
    kind: str
    model: str | None = None
    gguf: str | None = None
    binary: str | None = None
    spec: str | None = None
    threads: int | None = None
    ctx: int | None = None
    slots: int | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ref: str | None = None


def _int(key: str, value: str, spec: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise TargetSpecError(f"{key}={value!r} in {spec!r} is not a number") from e


def parse_launch(spec: str) -> LaunchSpec:
    """Parse one `--launch` argument (the module docstring has the form)."""
    name, sep, rest = spec.partition("=")
    kind, *opts = rest.split(",")
    if not sep or not name.strip() or kind.strip() not in KINDS:
        raise TargetSpecError(f"expected NAME=KIND[,opt=value...] with KIND one of {KINDS}, got {spec!r}")
    out = LaunchSpec(name=name.strip(), kind=kind.strip())
    for opt in opts:
        key, sep, value = opt.partition("=")
        key, value = key.strip(), value.strip()
        if not sep:
            raise TargetSpecError(f"option {opt!r} in {spec!r} is not KEY=VALUE")
        if key.startswith("env."):
            out.env[key[4:]] = value
        elif key in ("threads", "ctx", "slots"):
            setattr(out, key, _int(key, value, spec))
        elif key == "args":
            out.args += shlex.split(value)
        elif key == "bin":
            out.binary = value
        elif key in ("model", "gguf", "spec", "ref"):
            setattr(out, key, value)
        else:
            raise TargetSpecError(f"unknown option {key!r} in {spec!r}")
    if out.kind == "appliance" and out.spec:
        out.env.setdefault(SPEC_ENV, out.spec)
    return out


@dataclass(frozen=True)
class Defaults:
    """What every launched server shares unless its spec says otherwise."""

    model: str | None = None  # catalog name (appliance) / alias (llama-server)
    gguf: str | None = None
    llama_server: str = "llama-server"
    threads: int | None = None


def command(spec: LaunchSpec, port: int, defaults: Defaults) -> list[str]:
    """The child's argv, listening on 127.0.0.1:port."""
    threads = spec.threads or defaults.threads
    model = spec.model or defaults.model
    if spec.kind == "appliance":
        if not model:
            raise TargetSpecError(f"{spec.name}: the appliance needs model= (or --launch-model)")
        argv = [sys.executable, "-m", "appliance.cli", "serve", "--model", model, "--port", str(port)]
        argv += ["--threads", str(threads)] if threads else []
        argv += ["--ctx", str(spec.ctx)] if spec.ctx else []
        argv += ["--slots", str(spec.slots)] if spec.slots else []
        return argv + spec.args
    gguf = spec.gguf or defaults.gguf
    if not gguf:
        raise TargetSpecError(f"{spec.name}: llama-server needs gguf= (or --gguf)")
    argv = [spec.binary or defaults.llama_server, "-m", gguf, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--jinja", "--metrics"]  # the model's own chat template; /metrics for the counters
    argv += ["--alias", model] if model else []
    argv += ["-t", str(threads), "-tb", str(threads)] if threads else []
    argv += ["-c", str(spec.ctx)] if spec.ctx else []
    argv += ["-np", str(spec.slots)] if spec.slots else []
    argv += ["--spec-type", spec.spec] if spec.spec else []
    return argv + spec.args


def served_model(spec: LaunchSpec, defaults: Defaults) -> str | None:
    """The model name requests carry: llama-server's alias; the appliance's first listed one."""
    return (spec.model or defaults.model) if spec.kind == "llama-server" else None


def managed(spec: LaunchSpec, defaults: Defaults) -> ManagedServer:
    """The child process for `spec`, on a free loopback port (not started yet)."""
    port = free_port()
    options = {"launch": spec.kind} | ({"ref": spec.ref} if spec.ref else {})
    options |= {"spec": spec.spec} if spec.spec else {}
    return ManagedServer(
        spec.name,
        port=port,
        command=command(spec, port, defaults),
        env=spec.env,
        name=spec.name,
        kind=spec.kind,
        served_model=served_model(spec, defaults),
        options=options,
    )
