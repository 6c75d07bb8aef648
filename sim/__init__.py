"""cocotb testbench (driver, monitor, scoreboard) and runner helpers for the generated core.

- :mod:`gru_hw.sim.job`: the job a run gets (beats in, beats expected, stress options) and payload packing;
- :mod:`gru_hw.sim.gru_tb`: the cocotb test module run inside the simulator;
- :mod:`gru_hw.sim.runner`: Verilator / Icarus builds (one folder per configuration) and runs;
(Installed as ``gru_hw.sim``; the stand-in core that tests the bench itself is tests/standin_core.py.)
"""
