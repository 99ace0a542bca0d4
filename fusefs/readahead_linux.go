package fusefs

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// readAheadKB is how far ahead the kernel reads a file being read in
// order. Its default for FUSE, 128 KiB, is one round trip's worth: a
// sequential read then waits on every round trip (about 130 MiB/s over
// port-forward here). With 8 MiB, many reads of MaxWrite are in flight.
const readAheadKB = 16384

// widenReadAhead raises the kernel's read-ahead of the mount (its backing
// device's read_ahead_kb, which root may set); without it reads are slower,
// not wrong.
func widenReadAhead(dir string) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	_ = os.WriteFile(bdi, []byte(strconv.Itoa(readAheadKB)), 0)
}
