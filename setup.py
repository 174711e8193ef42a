"""pip packaging of tagclip_ros: `pip install .` installs the Python package and its commands.

Two builds share this repository:
- pip (this file): the `tagclip_ros` Python package and the `tagclip`, `tagger_node` and
  `image_source` commands, for use without a ROS 2 distro (the messages then come from
  scripts/build_msgs.sh) or next to one;
- colcon on a ROS 2 distro: package.xml declares `ament_cmake`, so colcon builds
  CMakeLists.txt (messages, Python modules, launch/ and config/) and never runs this file.

One source for each fact: name, version, description, license and maintainer are read from
package.xml; the dependencies are the pins of requirements/core.txt (what scripts/bootstrap.sh
installs), and the extra `ray` (`--ray` of the dataset verbs) those of requirements/ray.txt.
pyproject.toml holds only the build system and tool settings.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree

from setuptools import find_packages, setup
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))
# The files this script reads its metadata from (relative to HERE), besides README.md.
PACKAGE_XML = "package.xml"
REQUIREMENTS = os.path.join("requirements", "core.txt")
# Optional dependencies: extra name → its requirements file (`pip install .[ray]`).
EXTRAS = {"ray": os.path.join("requirements", "ray.txt")}


def read_package_xml(path: str) -> dict[str, str]:
    """The metadata fields of a ROS package.xml (format 2 or 3) that a wheel carries too."""
    root = ElementTree.parse(path).getroot()

    def text(tag: str) -> str:
        element = root.find(tag)
        if element is None or not (element.text or "").strip():
            raise ValueError(f"{path}: no <{tag}>")
        return " ".join(element.text.split())

    maintainer = root.find("maintainer")
    return {"name": text("name"), "version": text("version"), "description": text("description"),
            "license": text("license"), "maintainer": text("maintainer"),
            "maintainer_email": maintainer.get("email", "") if maintainer is not None else ""}


def read_requirements(path: str) -> list[str]:
    """The requirement lines of a pip requirements file: comments and blank lines dropped.

    Only plain requirement specifiers are accepted (pip options such as `-r` or `--index-url`
    would mean something else in package metadata), so a file that grows one fails here loudly.
    """
    requirements = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("-"):
                raise ValueError(f"{path}:{number}: pip option {line!r} cannot be package metadata")
            requirements.append(line)
    return requirements


def read_text(path: str) -> str:
    """A text file's content."""
    with open(path, encoding="utf-8") as f:
        return f.read()


class SdistWithMetadataSources(sdist):
    """An sdist that also carries PACKAGE_XML and REQUIREMENTS, so that a wheel can be built
    from it (`python -m build`); setuptools would leave them out."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, [*files, PACKAGE_XML, REQUIREMENTS, *EXTRAS.values()])


PACKAGE = read_package_xml(os.path.join(HERE, PACKAGE_XML))

setup(
    name=PACKAGE["name"],
    version=PACKAGE["version"],
    description=PACKAGE["description"],
    long_description=read_text(os.path.join(HERE, "README.md")),
    long_description_content_type="text/markdown",
    license=PACKAGE["license"],
    maintainer=PACKAGE["maintainer"],
    maintainer_email=PACKAGE["maintainer_email"],
    python_requires=">=3.10",
    install_requires=read_requirements(os.path.join(HERE, REQUIREMENTS)),
    extras_require={name: read_requirements(os.path.join(HERE, path)) for name, path in EXTRAS.items()},
    # Everything the code reads at run time is Python (vocabularies, prompts, parameter
    # defaults), so the wheel needs no package_data; test/test_packaging.py checks that every
    # file under tagclip_ros/ ends up in the wheel.
    packages=find_packages(include=["tagclip_ros", "tagclip_ros.*"]),
    entry_points={"console_scripts": [
        "tagclip = tagclip_ros.cli:main",
        "tagger_node = tagclip_ros.node.commands:tagger_node",
        "image_source = tagclip_ros.node.commands:image_source",
    ]},
    zip_safe=False,
    cmdclass={"sdist": SdistWithMetadataSources},
)
