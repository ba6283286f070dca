"""Heap corruption in oneDNN's AVX2 channels_last convolution weight gradient (torch alone).

On a CPU whose best oneDNN ISA is AVX2 (or with ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 one), the
weight gradient of a channels_last (NHWC) float32 Conv2d runs oneDNN's `jit_1x1:avx2`
backward_weights kernel for 1x1 convolutions (ONEDNN_VERBOSE=1 names it). With a stride of 2 or 4
and 2 to 7 input channels (fewer than the AVX2 vector of 8 floats, so the weights are padded) the
process aborts ("double free or corruption", "corrupted size vs. prev_size") or segfaults, in the
first pass, from a batch of 2 and 16 x 16 pixels on. The forward pass and the input gradient of the
same convolution, its contiguous layout, 8 or more input channels, and ONEDNN_MAX_CPU_ISA=SSE41,
AVX (a GEMM kernel) or AVX512_CORE ran clean here.

    python scripts/onednn_avx2_channels_last_repro.py             # the minimal case, in this process
    python scripts/onednn_avx2_channels_last_repro.py --trials 5  # the case in 5 fresh processes
    python scripts/onednn_avx2_channels_last_repro.py --sweep     # which shapes crash
    python scripts/onednn_avx2_channels_last_repro.py --case 4,8,1,2,0,16,16,wgrad

A case is IN,OUT,KERNEL,STRIDE,PADDING,BATCH,SIZE,PASS with PASS one of fwd, dgrad (input gradient),
wgrad (weight gradient) or both. ONEDNN_MAX_CPU_ISA is set to AVX2 unless already set; --contiguous
runs the same case in the default layout (the control); --malloc-check makes glibc check every
free (MALLOC_CHECK_=3), so that a corruption that would stay silent aborts too.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import sys

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # read by oneDNN at its first use, after import

import torch  # noqa: E402

MINIMAL = "4,8,1,2,0,16,16,wgrad"  # a ResNet's downsample shortcut at width 4: 1x1, stride 2
REPEATS = 3  # passes per process: the first one usually aborts already
MALLOC_DEBUG = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so"  # glibc >= 2.34 needs it for MALLOC_CHECK_


def parse(case: str) -> dict:
    *numbers, kind = case.split(",")
    cin, cout, kernel, stride, padding, batch, size = map(int, numbers)
    assert kind in ("fwd", "dgrad", "wgrad", "both"), kind
    return dict(cin=cin, cout=cout, kernel=kernel, stride=stride, padding=padding, batch=batch, size=size, kind=kind)


def run_case(case: str, channels_last: bool = True, repeats: int = REPEATS) -> None:
    """Forward (and the chosen gradient) of one Conv2d, `repeats` times, on one thread."""
    c = parse(case)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(c["cin"], c["cout"], c["kernel"], c["stride"], c["padding"], bias=False)
    conv = conv.to(memory_format=fmt)
    conv.weight.requires_grad_(c["kind"] in ("wgrad", "both"))
    for _ in range(repeats):
        x = torch.randn(c["batch"], c["cin"], c["size"], c["size"]).contiguous(memory_format=fmt)
        x.requires_grad_(c["kind"] in ("dgrad", "both"))
        y = conv(x)
        if c["kind"] != "fwd":
            y.sum().backward()


def trial(case: str, channels_last: bool = True, malloc_check: bool = False) -> str:
    """The case in a fresh process: "ok", or how it died (a crash kills the process)."""
    env = dict(os.environ)
    if malloc_check and os.path.exists(MALLOC_DEBUG):
        env.update(MALLOC_CHECK_="3", LD_PRELOAD=MALLOC_DEBUG)
    cmd = [sys.executable, __file__, "--case", case, "--quiet"] + ([] if channels_last else ["--contiguous"])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return "ok"
    # glibc's own message, not an import warning printed before the crash
    said = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line and line[0] != " "]
    last = (said or [""])[-1][:60]
    if proc.returncode < 0:
        return f"{signal.Signals(-proc.returncode).name} {last}".strip()
    return f"exit {proc.returncode} {last}".strip()


def sweep_cases() -> list[str]:
    """Channel counts around the vector width, 1x1 and 3x3, strides 1-3, all passes at once; then
    each pass, the batch and the image size apart on the minimal case."""
    cases = [
        f"{cin},{cout},{k},{s},{k // 2},16,16,both"
        for k, s, cin, cout in itertools.product((1, 3), (1, 2, 3), (3, 4, 6, 8, 12, 16), (4, 8))
    ]
    cases += [f"4,8,1,2,0,16,16,{kind}" for kind in ("fwd", "dgrad", "wgrad")]
    cases += [f"4,8,1,2,0,{b},{hw},wgrad" for b in (1, 2, 64) for hw in (4, 16, 32)]
    return cases


def describe() -> None:
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile") if f in flags]
    onednn = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
    print(f"torch {torch.__version__}, oneDNN {onednn.group(1) if onednn else 'unknown'}")
    print(f"CPU flags: {' '.join(isa) or 'unknown'}; ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}")
    print(f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", default=MINIMAL, help=f"IN,OUT,KERNEL,STRIDE,PADDING,BATCH,SIZE,PASS ({MINIMAL})")
    ap.add_argument("--contiguous", action="store_true", help="the control: NCHW instead of channels_last")
    ap.add_argument("--trials", type=int, default=0, help="run the case in this many fresh processes")
    ap.add_argument("--sweep", action="store_true", help="every case of the sweep in fresh processes")
    ap.add_argument("--malloc-check", action="store_true", help="MALLOC_CHECK_=3 in the trial processes")
    ap.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    layout = "contiguous" if args.contiguous else "channels_last"
    if not args.quiet:
        describe()
    if args.sweep or args.trials:
        cases, n = (sweep_cases(), max(args.trials, 1)) if args.sweep else ([args.case], args.trials)
        crashed = 0
        for case in cases:
            results = [trial(case, not args.contiguous, args.malloc_check) for _ in range(n)]
            bad = [r for r in results if r != "ok"]
            crashed += bool(bad)
            print(f"{case:24} {layout}: {len(bad)}/{n} crashed {'; '.join(sorted(set(bad)))}", flush=True)
        return 1 if crashed else 0
    if not args.quiet:
        print(f"case {args.case} ({parse(args.case)}), {layout}, {REPEATS} passes", flush=True)
    run_case(args.case, not args.contiguous)
    if not args.quiet:
        print("no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
