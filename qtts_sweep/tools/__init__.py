"""Developer tools on top of the product: benchmarks (`bench`) and the demo workflow (`demo`). Nothing in the
package imports them; they may import anything."""
