"""R1's rejection-sampling stage: from judged candidates to the SFT mixture.

What is built, module by module:

- `base`: the step interface (`Filter.keep(sample) -> (bool, reason)`,
  `apply_filters`, `StepStats` per step, `stats_markdown` for cards);
- `rejection`: the R1 rejection filters (verified-correct, template,
  readability, truncation, length, loops, degenerate chains of thought);
- `selection`: the pass-rate window and at most k diverse samples per prompt;
- `routing`: which prompts get a chain of thought, by rules with an optional judge;
- `minhash`, `dedup`: exact and MinHash-LSH near-duplicate detection;
- `decontam`: n-gram decontamination against benchmark files, with a report;
- `mixture`: the 600k reasoning + 200k non-reasoning mixture (targets,
  weights and quotas per domain and source, capped upsampling, seeded choice);
- `pipeline`: the filter-and-assemble run over store tables, committing a
  candidates table (every row with its decision) and the mixture with its card;
- `executor`: the same steps in-process, in a process pool or on Ray.

`r1f filter run | dedup | decontaminate` is the command line over them
(`flows.cli.filter`); `docs/mixture.md` describes the run and its benchmark.
"""
