"""cocotb testbench (driver, monitor, scoreboard) and runner helpers for the generated core.

- :mod:`sim.job`: the job a run gets (beats in, beats expected, stress options) and payload packing;
- :mod:`sim.gru_tb`: the cocotb test module run inside the simulator;
- :mod:`sim.runner`: Verilator / Icarus builds (one folder per configuration) and runs;
- :mod:`sim.standin`: a tiny core with the same ports, to test the bench itself.
"""
