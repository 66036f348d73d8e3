"""The suite's figures as the dated markdown table appended to benchmarks/RESULTS.md."""

from __future__ import annotations

MB = 2**20


def _f(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return lines


def clustering_lines(section: dict) -> list[str]:
    header = [
        "N", "features", "threads", "ours s", "k-NN floor s", "ours / floor",
        "dense s", "dense / ours", "ours peak MiB", "dense peak MiB", "memory ratio",
        "DBSCAN alone s", "ARI vs dense", "ARI vs DBSCAN alone", "ARI vs CPU",
        "clusters", "outliers",
    ]  # fmt: skip
    rows = []
    for r in section["rows"]:
        if "ours_s" not in r:
            rows.append([r["n"], r["features"], r["threads"], "failed"] + ["-"] * 13)
            continue
        rows.append(
            [
                r["n"], r["features"], r["threads"], r["ours_s"], r.get("floor_s"),
                r.get("ours_over_floor"), r.get("dense_s"), r.get("speedup_vs_dense"),
                r["ours_peak_bytes"] / MB,
                None if "dense_peak_bytes" not in r else r["dense_peak_bytes"] / MB,
                r.get("memory_ratio_vs_dense"), r.get("sklearn_dbscan_s"),
                r.get("ari_vs_dense"), r.get("ari_vs_sklearn_dbscan"), r.get("ari_vs_ours_cpu"),
                r["clusters"], r["outlier_frac"],
            ]
        )  # fmt: skip
    lines = ["**Clustering** (`pseudo_labels`, eps 0.6, k1 30, k2 6; peak = peak RSS minus "
             "the RSS once the features exist; ARI with outliers as singletons)", ""]  # fmt: skip
    lines += _table(header, rows)
    growth = ", ".join(f"{k} {v:.2f}" for k, v in section.get("growth", {}).items() if v)
    if growth:
        lines += ["", f"Growth exponents (slope of log time over log N): {growth}"]
    stage_rows = [
        [r["n"], r["features"], r["threads"]] + [r["ours_stages"].get(k) for k in STAGES]
        for r in section["rows"]
        if r.get("ours_stages")
    ]
    if stage_rows:
        lines += ["", "Stages of `pseudo_labels` (s; DBSCAN is the rest):", ""]
        lines += _table(["N", "features", "threads", *STAGES], stage_rows)
    return lines


STAGES = ["knn", "expansion", "weights", "query_expansion", "join", "to_csr"]


def markdown(report: dict, note: str = "") -> str:
    lines = [
        f"## {report['date']}: {report['device']}",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "",
        f"Command: `{report['command']}`",
        "",
        "Load average (1, 5, 15 min) before / after: "
        + " / ".join(
            ", ".join(f"{x:.1f}" for x in report.get(key, ()))
            for key in ("load_average", "load_average_after")
        ),
        "",
    ]
    if note:
        lines += [note, ""]
    if "clustering" in report:
        lines += clustering_lines(report["clustering"]) + [""]
    if "training" in report:
        t = report["training"]
        lines += ["**Training step and extraction** "
                  f"({t['model']} at {t['image_size']}, batch {t['batch_size']}, amp {t['amp']}, "
                  f"{t['steps']} timed steps after 2 warm-up)", ""]  # fmt: skip
        lines += _table(
            ["method images/s", "plain CE + triplet images/s", "method / plain",
             "extraction images/s (with data)", "train images"],
            [[t["ours_images_per_s"], t["plain_images_per_s"], t["ours_over_plain"],
              t["extract_images_per_s"], t["num_train_images"]]],
        ) + [""]  # fmt: skip
    if "ray" in report:
        r = report["ray"]
        if "skipped" in r:
            lines += [f"**Ray Train overhead**: skipped ({r['skipped']})", ""]
        else:
            workers = r.get("num_workers", "?")
            timed = r.get("epochs_timed", [2])
            span = f"epochs {timed[0]}-{timed[-1]}" if len(timed) > 1 else f"epoch {timed[0]}"
            lines += [f"**Ray Train overhead** ({span}, medians, through Ray Train: {workers} "
                      f"worker(s) x {r.get('cpus_per_worker', '?')} CPU, vs the same epochs in "
                      "one process without Ray, "
                      "`engine.local_loop`)", ""]  # fmt: skip
            lines += _table(
                ["Ray epoch s", "Ray train s", "without Ray s", "without Ray train s",
                 "overhead (share of the Ray epoch)"],
                [[r["ray_epoch_s"], r.get("ray_train_s", float("nan")),
                  r["plain_epoch_s"], r.get("plain_train_s", float("nan")),
                  r["overhead_frac_of_ray_epoch"]]],
            ) + [""]  # fmt: skip
    if "evaluation" in report:
        e = report["evaluation"]
        lines += [f"**Evaluation** ({e['num_query']} x {e['num_gallery']})", ""]
        lines += _table(
            ["ours ms", "per-query NumPy s", "speed-up", "|mAP - NumPy mAP|"],
            [[1000 * e["ours_s"], e["numpy_per_query_s"], e["speedup"], e["mAP_abs_diff_vs_numpy"]]],
        ) + [""]  # fmt: skip
    if "dictionary" in report:
        lines += ["**Mutual dictionary** (dense N x N int8 vs N^2 bytes at the copy bandwidth)", ""]
        lines += _table(
            ["N", "Dic s", "write floor s", "Dic / floor", "copy GB/s"],
            [[d["n"], d["dictionary_s"], d["write_floor_s"], d["over_floor"], d["copy_bandwidth_gb_s"]]
             for d in report["dictionary"]],
        ) + [""]  # fmt: skip
    return "\n".join(lines) + "\n"
