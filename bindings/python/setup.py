"""Only for the wheel tag: a wheel with a native library in kiln/_native/ is tagged for this
platform (py3-none-<platform>), one without stays pure Python. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import Distribution, setup

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

NATIVE = Path(__file__).parent / "src" / "kiln" / "_native"


def has_native_library() -> bool:
    return any(p.name.startswith(("libkiln", "kiln.")) for p in NATIVE.glob("*"))


class NativeDistribution(Distribution):
    # A bundled library makes the wheel platform-specific and puts the package at the wheel's root.
    def has_ext_modules(self) -> bool:
        return has_native_library()


class PlatformWheel(bdist_wheel):
    def get_tag(self) -> tuple:
        python, abi, plat = super().get_tag()
        # ctypes needs no particular Python ABI: any Python 3 on this platform.
        return ("py3", "none", plat) if has_native_library() else (python, abi, plat)


setup(distclass=NativeDistribution, cmdclass={"bdist_wheel": PlatformWheel})
