package files

// The watch stream tells the laptop what changes in the volumes, so its
// caches can be trusted long and dropped exactly when a file changes. A
// connection whose first byte after the secret is WatchMagic (an SFTP
// session starts with a packet length's high byte, 0) sends one JSON line,
// WatchRequest, and then reads one line per change: the changed path, or
// "*" when changes were lost (the kernel's queue overflowed, a watch could
// not be added) and everything must be dropped.
const WatchMagic byte = 'W'

// WatchRequest names the folders to watch, with all their subfolders.
type WatchRequest struct {
	Roots []string `json:"roots"`
}
