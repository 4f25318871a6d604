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

# %%
from pathlib import Path

import pandas as pd

from sae_lib import current_profile
from sae_lib.report import load_reports

reports = load_reports()
chapters = sorted(path.stem for path in Path(".").glob("[0-9][0-9]_*.py"))
missing = sorted(set(chapters) - set(reports))
assert not missing, f"chapters without saved checks (were they executed before this page?): {missing}"
titles = {c: next(line[4:] for line in Path(f"{c}.py").read_text().splitlines() if line.startswith("# # ")) for c in chapters}
print(f"Run profile of this build: {current_profile()}; {len(chapters)} chapters")

# %%
rows = [{"chapter": titles[chapter], **vars(check)} for chapter in chapters for check in reports[chapter]]
scorecard = pd.DataFrame(rows)
summary = scorecard.pivot_table(index="chapter", columns="status", values="claim", aggfunc="count", fill_value=0)
summary

# %%
pd.set_option("display.max_colwidth", None)
scorecard.set_index(["chapter", scorecard.groupby("chapter").cumcount() + 1]).style.set_properties(
    **{"text-align": "left"})
