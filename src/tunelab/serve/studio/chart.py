"""How the Studio's loss charts look, in one place: studio.js reads `CHART` from the page (`data-chart` on
<body>, html.page) and draws with uPlot; the tests read it here.

    runs        a colour pair per run (training, validation), every colour of the palette distinct: one run
                draws training blue and validation orange; an overlay gives each run its own pair
    validation  dashed with points; the legend draws each entry's box as its line is drawn (solid for
                training, dashed for validation, a hollow ring for the base)
    base        the base model's validation loss (report.md, runs_data.base_valid_loss) as one hollow point
                at step 0, in the run's validation colour
    step_incrs  the x axis' tick spacings: whole steps only (uPlot's default set has 2.5, which put ticks at
                2.5 and 7.5)
"""

from __future__ import annotations

RUN_COLORS = [("#2563eb", "#ea580c"), ("#059669", "#c026d3"), ("#7c3aed", "#ca8a04"), ("#0891b2", "#dc2626"),
              ("#4b5563", "#db2777")]
STEP_INCRS = [m * 10**e for e in range(8) for m in (1, 2, 5)]

CHART = {
    "runs": [{"train": t, "valid": v} for t, v in RUN_COLORS],
    "valid_dash": [6, 4],
    "base": {"size": 11, "width": 2, "fill": "#ffffff"},
    "step_incrs": STEP_INCRS,
}
