"""The debug socket: pprof-compatible profiles, ``/debug/vars`` and SIGUSR1 stack dumps."""
