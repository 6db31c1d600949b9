"""An audit of the paper's reported numbers (its Tables 1-4 and 6-10 against each other and its text), in
its parts; ``amdm_geom.analyses.reported.reported`` is the analysis.

- ``tables``: the printed tables (``data/reference/table*.csv``) as DataFrames and as one Dataset.
- ``relations``: rows that should agree across tables, values that repeat where they should differ, and
  COCO-MIG's averages against their level columns (a GRIM-style test).
- ``claims``: the text's statements about the tables (directions only) and the bold marks.
"""
