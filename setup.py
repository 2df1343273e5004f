"""tf_lottery: the Lottery Ticket Hypothesis laboratory for TensorFlow 2 / tf_keras."""

from setuptools import find_packages, setup

# The set checked to work together: tensorflow-model-optimization pins absl-py ~=1.2,
# and tensorflow-datasets needs importlib_resources without declaring it.
REQUIRED = [
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorflow-model-optimization==0.8.1",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",
    "absl-py>=1.2,<2",
    "numpy>=2,<3",
    "tensorboard",
    "tqdm",
    "matplotlib",
    "gymnasium==1.2.2",  # reinforcement learning (--dataset=gym:CartPole-v1); pure Python, CartPole needs no extras
]

setup(
    name="tf_lottery",
    version="0.1.0",
    description="Lottery Ticket Hypothesis experiments (IMP, rewinding, controls) in TensorFlow 2 / tf_keras",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tf_lottery", "tf_lottery.*"]),
    python_requires=">=3.10",
    install_requires=REQUIRED,
    extras_require={
        "test": ["pytest>=7"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
    },
    entry_points={"console_scripts": ["tf-lottery=tf_lottery.console:run"]},
)
