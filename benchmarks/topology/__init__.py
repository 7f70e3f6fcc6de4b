"""Meshes of other topologies and coverage for the critic's topology figures (``benchmarks.critic``,
``benchmarks.critic_topology``): crops, remeshed, subdivided and holed heads, their same-topology negatives,
the figures, and a no-learning light-fit reference scorer. Benchmark code: the product does not import it."""
