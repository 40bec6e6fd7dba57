from setuptools import find_packages, setup

setup(
    name="llava_sensing_pipeline",
    version="0.1.0",
    description="Dagster pipeline that turns novels into sensor-to-literature training data",
    packages=find_packages(exclude=["llava_sensing_pipeline_tests*"]),
    python_requires=">=3.10",
    install_requires=[
        "dagster>=1.13,<1.14",
        "dagster-webserver>=1.13,<1.14",
        "datasketch>=2,<3",
        "matplotlib>=3.8,<4",
        "ollama>=0.6,<0.7",
        "pandas>=2.2,<4",
        "pyarrow>=15,<27",
        "pydantic>=2.6,<3",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "xllamacpp>=2026.10,<2027",
        ],
    },
    entry_points={"console_scripts": ["llava-sensing=llava_sensing_pipeline.cli:main"]},
)
