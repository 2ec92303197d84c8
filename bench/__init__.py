"""Side-by-side benchmarks of pycontainerd and Debian's containerd (issue 6); see bench/README.md."""
