package main

import "syscall"

// childAttr makes a droplet-sim child die with droplet-sim: if it is killed
// without a chance to stop them, the kernel sends them SIGKILL.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
