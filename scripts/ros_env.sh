# Source me (prints nothing):  . scripts/ros_env.sh VENV INSTALL_PREFIX      (bash, zsh)
# POSIX sh/dash ignore arguments to `.`:  set -- VENV INSTALL_PREFIX; . scripts/ros_env.sh
#
# Environment for running ROS 2 from the PyPI wheels in VENV together with the tagclip_ros
# messages that scripts/build_msgs.sh installed in INSTALL_PREFIX: afterwards a process started
# with VENV/bin/python can `import rclpy` and `from tagclip_ros.msg import TagArray`.
# - AMENT_PREFIX_PATH: INSTALL_PREFIX and VENV (ament index: packages, interfaces, rmw).
# - LD_LIBRARY_PATH: INSTALL_PREFIX/lib (the message typesupport libraries, which rosidl also
#   looks up by name on this path) and VENV/lib. The wheels' own ros_*.libs folders are added
#   by the ros_wheels_bootstrapper .pth, which re-executes Python once with the full path.
# - PYTHONPATH: INSTALL_PREFIX/lib/pythonX.Y/site-packages (the generated tagclip_ros/msg;
#   see scripts/build_msgs.sh for how it merges with the hand-written tagclip_ros package).
# Sourcing it again does not duplicate entries. ROS_DOMAIN_ID and RMW_IMPLEMENTATION are left
# as they are (the wheels ship only rmw_fastrtps_cpp, which is the default).

if [ "$#" -lt 2 ]; then
  echo "usage: . scripts/ros_env.sh VENV INSTALL_PREFIX" >&2
  return 2 2>/dev/null || exit 2
fi

# Absolute paths (resolved when the folders exist; INSTALL_PREFIX may not be built yet).
_tagclip_abs() {
  (cd "$1" 2>/dev/null && pwd -P) || case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac
}
_tagclip_venv=$(_tagclip_abs "$1")
_tagclip_prefix=$(_tagclip_abs "$2")

# Python's site-packages folder name in the venv (lib/python3.11/site-packages), no interpreter run.
_tagclip_site=
for _tagclip_d in "$_tagclip_venv"/lib/python3*/site-packages; do
  [ -d "$_tagclip_d" ] && _tagclip_site=${_tagclip_d#"$_tagclip_venv"/} && break
done
[ -n "$_tagclip_site" ] || _tagclip_site=lib/python3.11/site-packages

# _tagclip_prepend VAR DIR...: put DIRs in front of VAR (last one first), without duplicates.
_tagclip_prepend() {
  _tagclip_var=$1
  shift
  eval "_tagclip_val=\${$_tagclip_var:-}"
  for _tagclip_p in "$@"; do
    case ":$_tagclip_val:" in
      *":$_tagclip_p:"*) _tagclip_val=$(printf '%s' ":$_tagclip_val:" \
                           | sed "s#:$_tagclip_p:#:#g; s#^:##; s#:\$##") ;;
    esac
    _tagclip_val=$_tagclip_p${_tagclip_val:+:$_tagclip_val}
  done
  eval "export $_tagclip_var=\$_tagclip_val"
}

_tagclip_prepend AMENT_PREFIX_PATH "$_tagclip_venv" "$_tagclip_prefix"
_tagclip_prepend CMAKE_PREFIX_PATH "$_tagclip_venv" "$_tagclip_prefix"
_tagclip_prepend LD_LIBRARY_PATH "$_tagclip_venv/lib" "$_tagclip_prefix/lib"
_tagclip_prepend PYTHONPATH "$_tagclip_prefix/$_tagclip_site"

unset -f _tagclip_prepend _tagclip_abs
unset _tagclip_venv _tagclip_prefix _tagclip_site _tagclip_d _tagclip_var _tagclip_val _tagclip_p
