package agent

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// memory reads total and used memory (total - MemAvailable) from a
// /proc/meminfo file.
func memory(path string) (used, total uint64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	return parseMeminfo(data)
}

// parseMeminfo reads MemTotal and MemAvailable (kB) from /proc/meminfo
// text.
func parseMeminfo(data []byte) (used, total uint64, err error) {
	var avail uint64
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "MemTotal" && key != "MemAvailable") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 || (len(f) == 2 && f[1] != "kB") {
			return 0, 0, errors.New("meminfo: malformed " + key)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || n > 1<<53 {
			return 0, 0, errors.New("meminfo: malformed " + key)
		}
		if len(f) == 2 {
			n *= 1024
		}
		if key == "MemTotal" {
			total, haveTotal = n, true
		} else {
			avail, haveAvail = n, true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveTotal || !haveAvail {
		return 0, 0, errors.New("meminfo: no MemTotal or MemAvailable")
	}
	if avail > total {
		avail = total
	}
	return total - avail, total, nil
}

// disk reads the size and use of the file system holding path.
func disk(path string) (used, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize)
	total = st.Blocks * bs
	free := st.Bfree * bs
	if free > total {
		free = total
	}
	return total - free, total, nil
}

// uptime reads the system's uptime from a /proc/uptime file.
func uptime(path string) (time.Duration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, errors.New("uptime: empty")
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil || s < 0 || s > 1e12 {
		return 0, errors.New("uptime: malformed")
	}
	return time.Duration(s * float64(time.Second)), nil
}
