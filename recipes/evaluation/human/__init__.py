"""Human evaluation: blind A/B sheets for raters, their answers read back, and the verdict.

1. ``sheets.build_sheets`` deals the same items to every rater, each rater in an order of
   their own and, per row, the two answers on sides A and B drawn at random; the
   :class:`~recipes.evaluation.human.sheets.EvalKey` (kept apart from the sheets) records
   which side is which and the seed. Pure; ``write_*`` put them on disk.
2. ``sheets.read_sheet`` parses a filled sheet (CSV or JSONL), every problem with its
   file, row and column; ``sheets.judgments`` maps A/B back to the versions with the key.
3. ``results.summarize`` computes the win rate (a binomial test and a Wilson interval,
   scipy), per-criterion means and Krippendorff's alpha (the ``krippendorff`` package).
4. ``results.gate_problems`` says what keeps a version from production under a recipe's
   ``deploy.human_eval`` (pure); the registry runs it in every promotion to production.

``answers`` generates the answers for real (transformers + peft, greedy).
"""
