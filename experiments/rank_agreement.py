"""A diagnostic of the preset rounds' validation, read after their choices (it chooses nothing): per run, the Spearman
rank correlation between the validation and the test micro AUC over the (score signal, smoothing sigma) rows of a
round's report, over all rows and over the rows of the useful signals only: AMC's flow, worst-patch flow and
max-patch scores (validation 0.78-0.83, against 0.43-0.63 for its PSNR and patch intensity error), FFP's PSNR,
intensity error and worst patch (0.82-0.88, against 0.75-0.79 for its gradient error).

    python experiments/rank_agreement.py     # reads experiments/results/{amc_cpu_preset,ffp_cpu_preset_v3}.md

High over all rows and near zero among the useful ones means: the validation tells useless signals from useful ones
(and so can choose a training under one score) but cannot rank the useful scores against each other.
"""

from __future__ import annotations

import re
from pathlib import Path

from scipy.stats import spearmanr

RESULTS = Path(__file__).resolve().parent / "results"
#: report -> the signals counted as useful
REPORTS = {
    "amc_cpu_preset.md": {"flow_error", "patch_score", "patch_flow_error"},
    "ffp_cpu_preset_v3.md": {"psnr", "intensity_error", "patch_max"},
}
#: a tested row of the reports' table: candidate, signal, sigma, val micro mean, test micro
ROW = re.compile(r"^\| \**(\w+)\** \| (\w+) \| ([\d.]+) \| ([\d.]+) ± [\d.]+ \| [\d.]+ \| ([\d.]+) \|")


def tested_rows(report: Path) -> list[tuple[str, str, float, float, float]]:
    rows = []
    for line in report.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match[1], match[2], float(match[3]), float(match[4]), float(match[5])))
    return rows


def main() -> None:
    for name, useful in REPORTS.items():
        rows = tested_rows(RESULTS / name)
        for run in sorted({r[0] for r in rows}):
            every = [r for r in rows if r[0] == run]
            good = [r for r in every if r[1] in useful]
            rho_all = spearmanr([r[3] for r in every], [r[4] for r in every]).statistic
            rho_good = spearmanr([r[3] for r in good], [r[4] for r in good]).statistic
            print(f"{name} {run}: all {len(every)} rows {rho_all:+.2f}; useful {len(good)} rows {rho_good:+.2f}")


if __name__ == "__main__":
    main()
