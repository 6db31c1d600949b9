"""The core: pure math with no model, sampler or store in sight (geometry, the paper's bounds and
schedules, statistics, typed specs, the verdict record, palettes, size budgets)."""
