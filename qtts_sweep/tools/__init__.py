"""Developer tools on top of the product: benchmarks (`bench`) and the demo workflow (`demo`).

Owns nothing the product needs: nothing in the package imports these modules; they may import anything below.
"""
