"""Developer tools on top of the product: benchmarks (`bench`, `bench_search`), the demo workflow (`demo`) and the
real-size dry run (`dry_run`: the path; `memory_plan`: the plan's numbers; `dry_run_report`: the report).

Owns nothing the product needs: nothing in the package imports these modules; they may import anything below.

Modules: `bench`, `bench_search`, `demo`, `dry_run`, `dry_run_report`, `memory_plan`.
Imports from the package: config, data, evaluate, model, production, sweep, train, util.
"""
