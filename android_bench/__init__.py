"""The phone side of mixdeploy, shipped as package data so an installed wheel has it.

device/mixdeploy_bench.sh  the POSIX-sh script `mixdeploy bench --device` pushes to the phone and
                           runs (mixdeploy.bench.device_script is its host side)

No Python runs on the phone; this package only carries the files (read with importlib.resources).
"""
