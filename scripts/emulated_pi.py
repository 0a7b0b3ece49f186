#!/usr/bin/env python3
"""An emulated Raspberry Pi on this machine: arm64 Debian bookworm (what 64-bit Raspberry Pi
OS is built on, Python 3.11) run by qemu user-mode emulation as a Cortex-A76 (Pi 5) or a
Cortex-A72 (Pi 4), with the device install of edge-yolo (the built wheel with its
``[tflite]`` extra: numpy, OpenCV, ai-edge-litert, no torch) and a tflite-runtime 2.14
environment (numpy<2), as older Pi images carry.

    python scripts/emulated_pi.py setup            # build or refresh; prints what it made (JSON)
    python scripts/emulated_pi.py run --cpu a72 -- -m edge_yolo verify BUNDLE
    python scripts/emulated_pi.py run --env tflite214 -- script.py ARGS

Everything lives in ``.cache/emulated-pi/`` (the root filesystem and the wheels are made once;
the edge-yolo wheel and the two environments are rebuilt on every ``setup``, so they are the
code of this checkout). Missing tools (qemu-user-static, mmdebstrap) are installed with
apt-get when run as root, else named. Emulation tells the truth about correctness, not
speed: no latency measured here means anything.

One trap: LiteRT reads ``/proc/cpuinfo`` to pick its kernels; under user-mode emulation it
would read the host's x86 text and crash in ``allocate_tensors``. qemu resolves absolute paths
inside the root filesystem first, so each CPU model gets a copy of the root filesystem
(hard-linked) with its own ``proc/cpuinfo`` and ``sys/devices/system/cpu`` files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGE_YOLO_PI_CACHE", REPO / ".cache" / "emulated-pi"))
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PYTHON = "usr/bin/python3.11"
#: Debian packages of the root filesystem: Python 3.11 and what the wheels link against (the
#: OpenCV that `pip install edge-yolo` brings is the GUI build: libGL, as on Pi OS with a desktop)
PACKAGES = ("python3.11", "libpython3.11-stdlib", "python3-minimal", "libstdc++6", "libgomp1",
            "zlib1g", "libgcc-s1", "libgl1", "libglib2.0-0")
#: wheel platform tags a bookworm (glibc 2.36) aarch64 system installs
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{v}_aarch64" for v in range(17, 37)))

#: the two boards: qemu CPU model and the /proc/cpuinfo a real board shows (4 cores)
CPUS = {
    "a76": {
        "qemu": "cortex-a76",
        "board": "Raspberry Pi 5 Model B Rev 1.0",
        "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                    "asimdrdm lrcpc dcpop asimddp",
        "variant": "0x4", "part": "0xd0b", "revision": "1",
    },
    "a72": {
        "qemu": "cortex-a72",
        "board": "Raspberry Pi 4 Model B Rev 1.5",
        "features": "fp asimd evtstrm crc32 cpuid",
        "variant": "0x0", "part": "0xd08", "revision": "3",
    },
}
#: the tflite-runtime 2.14 environment: numpy 1.x, and an OpenCV that still takes it
OLD_RUNTIME = ("tflite-runtime==2.14.0", "numpy<2", "opencv-python-headless<4.12", "pyyaml>=6")


class SetupError(RuntimeError):
    """A step of the setup that failed; says which and why."""


def say(message: str) -> None:
    print(f"emulated-pi: {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise SetupError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd[:4])} ...\n{tail}")
    return proc


def ensure_tools() -> None:
    """qemu-aarch64-static and mmdebstrap, from Debian's packages when they are missing."""
    missing = [t for t in ("qemu-aarch64-static", "mmdebstrap") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SetupError(
            f"missing {', '.join(missing)}: install the Debian packages qemu-user-static and "
            "mmdebstrap (apt-get install qemu-user-static mmdebstrap)"
        )
    say(f"installing qemu-user-static and mmdebstrap (missing: {', '.join(missing)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-qq", "qemu-user-static", "mmdebstrap"],
         "apt-get install qemu-user-static mmdebstrap", env=env)


def ensure_rootfs() -> Path:
    """The arm64 bookworm root filesystem (made once, about 80 MB)."""
    root = CACHE / "rootfs"
    stamp = CACHE / "rootfs.done"
    if stamp.is_file() and (root / PYTHON).is_file():
        return root
    say(f"building the arm64 Debian {SUITE} root filesystem (mmdebstrap --variant=extract)")
    shutil.rmtree(root, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    _run(["mmdebstrap", "--variant=extract", "--architectures=arm64",
          f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR], "mmdebstrap")
    stamp.write_text(" ".join(PACKAGES) + "\n")
    return root


def cpu_root(cpu: str) -> Path:
    """A hard-linked copy of the root filesystem that describes one CPU model."""
    spec = CPUS[cpu]
    target = CACHE / f"cpu-{cpu}"
    if not (target / PYTHON).is_file():
        base = ensure_rootfs()
        say(f"describing a {spec['board']} ({spec['qemu']})")
        shutil.rmtree(target, ignore_errors=True)
        _run(["cp", "-al", str(base), str(target)], "hard-linked copy of the root filesystem")
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {spec['features']}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {spec['variant']}\n"
        f"CPU part\t: {spec['part']}\nCPU revision\t: {spec['revision']}\n"
        for i in range(4)
    ]
    proc = target / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text("\n".join(blocks) + f"\nModel\t\t: {spec['board']}\n")
    cpus = target / "sys" / "devices" / "system" / "cpu"
    cpus.mkdir(parents=True, exist_ok=True)
    for name in ("possible", "present", "online"):
        (cpus / name).write_text("0-3\n")
    return target


def build_wheel() -> Path:
    """The edge-yolo wheel of this checkout."""
    dist = CACHE / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    say("building the edge-yolo wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist),
          str(REPO)], "pip wheel")
    (wheel,) = dist.glob("edge_yolo-*.whl")
    return wheel


def install_env(name: str, requirements: list[str], *, no_deps_wheel: Path | None = None) -> Path:
    """A ``pip install --target`` of aarch64 cp311 wheels (replaced whole on every setup)."""
    target = CACHE / f"site-{name}"
    tmp = Path(tempfile.mkdtemp(prefix=f".site-{name}.", dir=CACHE))
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311", *platform_args, "--target", str(tmp)]
    try:
        say(f"installing the {name} environment for aarch64: {' '.join(requirements)}")
        _run([*base, *requirements], f"pip install ({name})")
        if no_deps_wheel is not None:
            _run([*base, "--no-deps", str(no_deps_wheel)], f"pip install edge-yolo ({name})")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def installed_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def setup(cpus: list[str]) -> dict:
    ensure_tools()
    roots = {cpu: str(cpu_root(cpu)) for cpu in cpus}
    wheel = build_wheel()
    device = install_env("tflite", [f"{wheel}[tflite]"])
    old = install_env("tflite214", list(OLD_RUNTIME), no_deps_wheel=wheel)
    return {
        "roots": roots,
        "python": PYTHON,
        "envs": {"tflite": str(device), "tflite214": str(old)},
        "wheel": wheel.name,
        "installed_mb": {"tflite": round(installed_mb(device), 1),
                         "tflite214": round(installed_mb(old), 1)},
    }


def command(cpu: str, env: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``python3.11 ARGS`` on the emulated board."""
    root = CACHE / f"cpu-{cpu}"
    site = CACHE / f"site-{env}"
    if not (root / PYTHON).is_file() or not site.is_dir():
        raise SetupError(f"no emulated {cpu} with the {env} environment: run `setup` first")
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(CACHE),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(site),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    qemu = shutil.which("qemu-aarch64-static") or "qemu-aarch64-static"
    # -P: the working directory is not put on sys.path, so edge_yolo is the installed wheel's
    # even when run from a checkout
    cmd = [qemu, "-cpu", CPUS[cpu]["qemu"], "-L", str(root), str(root / PYTHON), "-P", *args]
    return cmd, environ


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("setup", help="build or refresh the emulated Pi; prints JSON")
    s.add_argument("--cpu", choices=(*CPUS, "all"), default="all")
    r = sub.add_parser("run", help="run python3.11 with ARGS on the emulated Pi")
    r.add_argument("--cpu", choices=tuple(CPUS), default="a76")
    r.add_argument("--env", choices=("tflite", "tflite214"), default="tflite")
    r.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    try:
        if args.action == "setup":
            cpus = list(CPUS) if args.cpu == "all" else [args.cpu]
            print(json.dumps(setup(cpus), indent=1))
            return 0
        cmd, environ = command(args.cpu, args.env, [a for a in args.args if a != "--"])
    except SetupError as e:
        say(str(e))
        return 2
    return subprocess.run(cmd, env=environ).returncode


if __name__ == "__main__":
    sys.exit(main())
