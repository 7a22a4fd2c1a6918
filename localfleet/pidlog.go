package localfleet

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Leftovers returns the lines of the pid log (lines "PID ROLE ...", as
// genesis-demo droplet's --pid-log writes them) whose process still runs,
// and how many processes the log names; a missing log names none.
func Leftovers(pidLog string) ([]string, int, error) {
	f, err := os.Open(pidLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var alive []string
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pid, err := strconv.Atoi(fields[0])
		if err != nil || pid < 2 {
			return nil, n, fmt.Errorf("%s: bad line %q", pidLog, sc.Text())
		}
		n++
		if !ProcessGone(pid) {
			alive = append(alive, sc.Text())
		}
	}
	return alive, n, sc.Err()
}

// ProcessGone reports whether pid no longer runs (a zombie waiting for its
// parent to collect it has stopped running too).
func ProcessGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) STATE ...: comm may hold spaces and parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] == 'Z' || stat[i+2] == 'X'
	}
	return false
}
