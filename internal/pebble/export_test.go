package pebble

// PID is the process id of the running Pebble, for tests that check Stop.
func (s *Server) PID() int { return s.cmd.Process.Pid }
