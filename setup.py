from setuptools import find_packages, setup

# redis: the Celery broker's client (kombu's Redis transport), for the Celery set-up that test_distributed.py runs
SCALE = ["dagster-postgres>=0.29,<0.30", "dagster-k8s>=0.29,<0.30", "dagster-celery>=0.29,<0.30", "redis>=6.4,<9"]

setup(
    name="llava_sensing_pipeline",
    version="0.1.0",
    description="Dagster pipeline that turns novels into sensor-to-literature training data",
    packages=find_packages(exclude=["llava_sensing_pipeline_tests*"]),
    package_data={"llava_sensing_pipeline.environment": ["GUIDE.md"]},
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
        "tqdm>=4.60,<5",
        "universal-pathlib>=0.2,<0.4",
    ],
    extras_require={
        # Beyond one machine: instance storage on PostgreSQL (deploy/dagster-postgres.yaml) and the Kubernetes and
        # Celery executors (LLAVA_SENSING_EXECUTOR=k8s|celery, deploy/).
        "scale": SCALE,
        # Parquet storage and exports on object stores (--output-dir / LLAVA_SENSING_STORAGE_DIR s3://… or gs://…).
        "s3": ["s3fs>=2024.2"],
        "gcs": ["gcsfs>=2024.2"],
        "test": [
            *SCALE,
            "pytest>=8,<10",
            "playwright>=1.50,<2",  # drives Debian's chromium in test_ui (no browser download)
            "xllamacpp>=2026.10,<2027",
        ],
    },
    entry_points={"console_scripts": ["llava-sensing=llava_sensing_pipeline.cli:main"]},
)
