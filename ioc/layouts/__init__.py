"""Wall layouts: grids of tiles a wall display draws, and the `layout:<id>` live topic."""
