package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"genesis.dev/fleet/schema"
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
	total, avail, haveTotal, haveAvail, err := meminfoPair(data, "MemTotal", "MemAvailable")
	if err != nil {
		return 0, 0, err
	}
	if !haveTotal || !haveAvail {
		return 0, 0, errors.New("meminfo: no MemTotal or MemAvailable")
	}
	return total - min(avail, total), total, nil
}

// meminfoPair reads the sizes (kB, in bytes) of /proc/meminfo's fields
// totalKey and freeKey, and whether each was there; a malformed value or a
// field given twice is an error naming it.
func meminfoPair(data []byte, totalKey, freeKey string) (total, free uint64, haveTotal, haveFree bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != totalKey && key != freeKey) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 || (len(f) == 2 && f[1] != "kB") {
			return 0, 0, false, false, errors.New("meminfo: malformed " + key)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || n > 1<<53 {
			return 0, 0, false, false, errors.New("meminfo: malformed " + key)
		}
		if len(f) == 2 {
			n *= 1024
		}
		have, v := &haveTotal, &total
		if key == freeKey {
			have, v = &haveFree, &free
		}
		if *have {
			return 0, 0, false, false, errors.New("meminfo: " + key + " twice")
		}
		*have, *v = true, n
	}
	if err := sc.Err(); err != nil {
		return 0, 0, false, false, err
	}
	return total, free, haveTotal, haveFree, nil
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

// swap reads total and used swap (SwapTotal - SwapFree) from a
// /proc/meminfo file.
func swap(path string) (used, total uint64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	return parseSwap(data)
}

// parseSwap reads SwapTotal and SwapFree (kB) from /proc/meminfo text.
// Both missing is no swap (0, 0); one without the other, or a malformed
// value, is an error naming the field.
func parseSwap(data []byte) (used, total uint64, err error) {
	total, free, haveTotal, haveFree, err := meminfoPair(data, "SwapTotal", "SwapFree")
	if err != nil {
		return 0, 0, err
	}
	if haveTotal != haveFree {
		return 0, 0, errors.New("meminfo: SwapTotal without SwapFree or the other way round")
	}
	return total - min(free, total), total, nil
}

// swapHealth is the swap component: not OK when more than maxPercent of
// the swap is in use (swap absorbs n8n's peaks on a small droplet; heavy,
// lasting use means it needs more memory). No swap is no problem.
func swapHealth(used, total uint64, maxPercent float64) schema.ComponentHealth {
	if total == 0 {
		return schema.ComponentHealth{OK: true, Detail: "no swap"}
	}
	pct := float64(used) * 100 / float64(total)
	d := fmt.Sprintf("%s of %s swap used (%.0f%%)", gib(used), gib(total), pct)
	if pct > maxPercent {
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("%s, more than %g%%", d, maxPercent)}
	}
	return schema.ComponentHealth{OK: true, Detail: d}
}

// gib formats a byte count in GiB with one decimal.
func gib(n uint64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }
