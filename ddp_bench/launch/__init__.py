"""Launch: which launcher started this process, the process group, pre-flight checks, the hardware plan and
agreed stops."""
