package files

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// ServeTree reads one wire.TreeRequest line from r and writes the tree
// stream to w (the protocol is in package wire).
func ServeTree(r *bufio.Reader, w io.Writer) error {
	var req wire.TreeRequest
	if err := readRequest(r, &req); err != nil {
		return fmt.Errorf("tree request: %w", err)
	}
	if err := req.Validate(); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var out io.Writer = bw
	var zw *zstd.Encoder
	if req.Encoding == wire.TreeZstd {
		// The fastest level: on 7.5 MB of a tree's headers and small
		// files it takes ~15 ms and leaves ~6% of the bytes.
		var err error
		zw, err = zstd.NewWriter(bw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return err
		}
		out = zw
	}
	tw := tar.NewWriter(out)
	listings := tw
	if req.ContentOnly {
		listings = nil
	}
	p := &pacer{zw: zw, bw: bw}
	small, err := writeListings(listings, req, p.tick)
	if err != nil {
		return err
	}
	if err := writeContents(tw, small, req.Budget, p.tick); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// pacer sends what the stream has so far every treeFlushEvery, so the
// laptop lists folders and serves files as they come: the buffer and zstd
// held a small tree's whole stream (20 KB for 2,000 files) until its end,
// and a cp -r waited for all of it before its first file.
type pacer struct {
	zw   *zstd.Encoder
	bw   *bufio.Writer
	last time.Time
}

const treeFlushEvery = 5 * time.Millisecond

// tick is called between entries.
func (p *pacer) tick() error {
	if time.Since(p.last) < treeFlushEvery {
		return nil
	}
	p.last = time.Now()
	if p.zw != nil {
		if err := p.zw.Flush(); err != nil {
			return err
		}
	}
	return p.bw.Flush()
}

// readRequest reads a stream's request: one JSON line of at most 4 KiB.
func readRequest(r *bufio.Reader, req any) error {
	line, err := readLine(r, 4<<10)
	if err != nil {
		return err
	}
	return json.Unmarshal(line, req)
}

// readLine reads up to max bytes up to a newline: a request from the
// network is bounded.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		b, err := r.ReadSlice('\n')
		line = append(line, b...)
		if len(line) > max {
			return nil, fmt.Errorf("longer than %d bytes", max)
		}
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

// smallFile is a file whose content may follow the listings.
type smallFile struct {
	path string
	fi   fs.FileInfo
}

// writeListings lists the folders under the root breadth first, up to
// req.Folders, into tw (nil: nowhere), and returns the small files it met,
// in depth-first order.
func writeListings(tw *tar.Writer, req wire.TreeRequest, tick func() error) ([]smallFile, error) {
	type folder struct {
		path  string
		order string // sort key of a depth-first walk over sorted names
	}
	queue := []folder{{req.Root, ""}}
	type keyed struct {
		key string
		f   smallFile
	}
	var small []keyed
	for listed := 0; len(queue) > 0 && listed < req.Folders; listed++ {
		dir := queue[0]
		queue = queue[1:]
		fi, err := os.Lstat(dir.path)
		if err != nil || !fi.IsDir() {
			continue // gone since it was listed: the laptop lists it itself
		}
		entries, err := os.ReadDir(dir.path)
		if err != nil {
			continue
		}
		if tw != nil {
			if err := tick(); err != nil {
				return nil, err
			}
			hdr := header(dir.path, fi, "")
			hdr.PAXRecords[wire.TreeList] = "1"
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
		}
		for _, e := range entries {
			p := path.Join(dir.path, e.Name())
			efi, err := e.Info()
			if err != nil {
				continue // removed while listed
			}
			if tw != nil {
				link := ""
				if efi.Mode()&fs.ModeSymlink != 0 {
					link, _ = os.Readlink(p)
				}
				if err := tw.WriteHeader(header(p, efi, link)); err != nil {
					return nil, err
				}
			}
			// NUL sorts before every name byte: keys sort as a walk of
			// sorted names (cp -r, grep -r over this listing) meets them.
			key := dir.order + "\x00" + e.Name()
			switch {
			case efi.IsDir():
				queue = append(queue, folder{p, key})
			case efi.Mode().IsRegular() && efi.Size() <= req.SmallFile && req.Budget > 0:
				small = append(small, keyed{key, smallFile{p, efi}})
			}
		}
	}
	sort.Slice(small, func(i, j int) bool { return small[i].key < small[j].key })
	out := make([]smallFile, len(small))
	for i, k := range small {
		out[i] = k.f
	}
	return out, nil
}

// writeContents sends the small files' content while the budget lasts. A
// file that changed since it was listed is left out: the laptop then reads
// it the usual way.
func writeContents(tw *tar.Writer, files []smallFile, budget int64, tick func() error) error {
	for _, f := range files {
		if err := tick(); err != nil {
			return err
		}
		if f.fi.Size() > budget {
			continue
		}
		data, ok := readUnchanged(f)
		if !ok {
			continue
		}
		budget -= int64(len(data))
		hdr := header(f.path, f.fi, "")
		delete(hdr.PAXRecords, wire.TreeSize)
		hdr.Size = int64(len(data))
		hdr.PAXRecords[wire.TreeContent] = "1"
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// readUnchanged reads a file whole if it still has the size and time it
// was listed with.
func readUnchanged(f smallFile) ([]byte, bool) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, false
	}
	defer fh.Close()
	before, err := fh.Stat()
	if err != nil || !before.Mode().IsRegular() || before.Size() != f.fi.Size() || !before.ModTime().Equal(f.fi.ModTime()) {
		return nil, false
	}
	data := make([]byte, f.fi.Size()+1)
	n, err := io.ReadFull(fh, data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, false
	}
	if int64(n) != f.fi.Size() {
		return nil, false
	}
	return data[:n], true
}

// header describes an entry with its attributes as SFTP gives them.
func header(p string, fi fs.FileInfo, link string) *tar.Header {
	hdr := &tar.Header{
		Name:       p,
		Linkname:   link,
		Mode:       int64(fi.Mode().Perm()),
		ModTime:    fi.ModTime().Truncate(time.Second),
		Format:     tar.FormatPAX,
		PAXRecords: map[string]string{wire.TreeSize: strconv.FormatInt(fi.Size(), 10)},
	}
	m := fi.Mode()
	if m&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	switch {
	case m.IsDir():
		hdr.Typeflag = tar.TypeDir
	case m&fs.ModeSymlink != 0:
		hdr.Typeflag = tar.TypeSymlink
	case m&fs.ModeNamedPipe != 0:
		hdr.Typeflag = tar.TypeFifo
	case m&fs.ModeCharDevice != 0:
		hdr.Typeflag = tar.TypeChar
	case m&fs.ModeDevice != 0:
		hdr.Typeflag = tar.TypeBlock
	default:
		hdr.Typeflag = tar.TypeReg // sockets too: the laptop only lists them
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
		// The whole mode, as SFTP sends it: tar has no type for sockets.
		hdr.PAXRecords[wire.TreeMode] = strconv.FormatUint(uint64(st.Mode), 8)
	}
	return hdr
}
