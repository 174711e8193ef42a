"""The ROS 2 layer: the tagger node, message conversion, parameters, and a demo image source.

All computation lives in `tagclip_ros.core`; this package only handles topics, parameters,
threading and lifecycle.
"""
