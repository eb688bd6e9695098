"""Developer tools on top of the product: benchmarks (`bench`) and the demo workflow (`demo`).

Owns nothing the product needs: nothing in the package imports these modules; they may import anything below.

Modules: `bench`, `bench_search`, `demo`, `dry_run`.
Imports from the package: config, data, evaluate, model, production, sweep, train, util.
"""
