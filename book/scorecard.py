# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Replication scorecard
#
# Every chapter ends with a table of the claims it computed and asserted. This page gathers them all.
# It is generated while the book is built, from the checks each chapter saved as it ran, so it shows
# the results of *this* build: a claim that had stopped holding would have failed its chapter, and the
# build with it.
#
# **Status**: `pass` means the claim was asserted and held. Any other status (for example `differs`)
# marks a result that is reported but deliberately not asserted; the chapter explains why, usually
# because our run differs from the paper's.
#
# **Kind**: checks are of four kinds, counted apart so that the mechanics do not inflate the
# replication count.
#
# * *replication*: a claim of a paper, with the paper's number beside ours, computed live in the
#   paper's setting or a faithful analogue of it;
# * *replication (shipped run)*: the same, read from a results file that a long script shipped
#   with the book (the chapter says which script, budget and machine); only a changed file can
#   make such a check fail;
# * *finding*: a result of the book's own, which the papers do not state;
# * *mechanics*: a property that holds on any weights (shapes, an identity splice, the library
#   agreeing with the version written from scratch). These test the code, not the science.

# %% tags=["remove-input"]
from pathlib import Path

import pandas as pd

from sae_lib import current_profile
from sae_lib.report import KINDS, SHIPPED_RUN, load_reports

reports = load_reports()
chapters = sorted(path.stem for path in Path(".").glob("[0-9][0-9]_*.py"))
missing = sorted(set(chapters) - set(reports))
assert not missing, (
    f"chapters without saved checks (were they executed before this page?): {missing}"
)
titles = {
    c: next(
        line[4:]
        for line in Path(f"{c}.py").read_text().splitlines()
        if line.startswith("# # ")
    )
    for c in chapters
}
print(f"Run profile of this build: {current_profile()}; {len(chapters)} chapters")

# %% tags=["remove-input"]
rows = [
    {"chapter": titles[chapter], **vars(check)}
    for chapter in chapters
    for check in reports[chapter]
]
scorecard = pd.DataFrame(rows)
scorecard["outcome"] = (
    scorecard["status"]
    .where(scorecard["status"] == "pass", "reported")
    .replace({"pass": "held"})
)
summary = scorecard.pivot_table(
    index="chapter",
    columns=["kind", "outcome"],
    values="claim",
    aggfunc="count",
    fill_value=0,
)
columns = pd.MultiIndex.from_product([list(KINDS), ["held", "reported"]])
summary = summary.reindex(columns=columns, fill_value=0)
summary.loc["whole book"] = summary.sum()
for kind, label in (("replication", "live"), (SHIPPED_RUN, "from a shipped run")):
    total = summary.loc["whole book", kind]
    print(
        f"Claims of the papers checked {label}: {total.sum()}\n"
        f"  asserted and held: {total['held']}\n"
        f"  reported without assertion (ours differs, or not comparable): "
        f"{total['reported']}"
    )
summary

# %% [markdown]
# Every check, chapter by chapter:

# %% tags=["remove-input"]
detail = scorecard.assign(chapter=scorecard["chapter"].str.split(".").str[0])[
    ["chapter", "kind", "claim", "paper", "ours", "status"]
]
detail.style.hide(axis="index").set_properties(
    **{"text-align": "left", "vertical-align": "top"}
).set_properties(subset=["claim"], **{"min-width": "260px"})
