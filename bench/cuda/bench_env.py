"""What a benchmark records about the machine and the tree it measured.

Shared by the prefill and decode benchmarks: device, driver, CUDA, cuDNN,
torch and the commit, as one dict for their JSON lines and headers.
"""
import os
import statistics
import subprocess
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        lines = out.stdout.strip().splitlines()
        return lines[0].strip() if out.returncode == 0 and lines else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_commit(given):
    if given:
        return given
    # The device copy of the tree has no .git, hence --commit and this fallback.
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cudnn_version_string(torch):
    v = torch.backends.cudnn.version()
    if v is None:
        return "none"
    # cuDNN 9 encodes major*10000 + minor*100 + patch (91900 = 9.19.0).
    return f"{v // 10000}.{v // 100 % 100}.{v % 100}" if v >= 90000 else str(v)


def run_environment(torch, commit):
    """Device, driver, CUDA, cuDNN, torch and commit of this run."""
    return {"device": torch.cuda.get_device_name(), "driver": driver_version(), "cuda": torch.version.cuda,
            "cudnn": cudnn_version_string(torch), "torch": torch.__version__, "commit": git_commit(commit)}


def settle_clocks(torch, seconds=1.0):
    """Keeps the GPU busy with fp16 matmuls for `seconds`, so that the first
    timed row does not run while the clocks are still rising from idle (one
    run measured its first row, ours and the peers alike, a third slow)."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def median_ms(torch, fn, warmup, repeats, sleep=None):
    """Median of event-timed calls on the current stream.

    All repeats are queued before one synchronize, so the GPU stays ahead of
    the host and the host-side cost of a call (ctypes, Python) hides behind
    the previous kernel instead of landing between an event pair. Where one
    call's GPU time is shorter than its host cost (decode), `sleep(ms)` holds
    the stream first: twice as long as queueing every repeat took during the
    warm-up, so each event pair brackets only the GPU's work.
    """
    host = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        host.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    if sleep is not None:
        per_call_ms = (statistics.median(host) * 1e3 if host else 0.05) + 0.02  # + two event records
        sleep(2.0 * per_call_ms * repeats + 0.2)
    for s, e in zip(starts, ends):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
