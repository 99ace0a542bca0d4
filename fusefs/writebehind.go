package fusefs

import (
	"sync"
	"sync/atomic"
)

// Write-behind: a write is acknowledged to the kernel once its bytes are
// queued, and goes to the pod while the writer writes on, several at once
// (a write waited for its round trip: 10 MiB + fsync ran at 0.3x the link).
// What the writer may rely on holds: writes to overlapping ranges reach
// the pod in order, a read or stat of the file waits for the writes before
// it, and the first error reaches the writer at its next write, flush
// (close) or fsync. Appends stay synchronous: the pod picks their offset.

// maxBehind bounds the bytes written behind per file: a writer faster than
// the link waits here rather than filling memory.
const maxBehind = 16 << 20

// pending is one file's writes in flight, shared by its handles.
type pending struct {
	mu     sync.Mutex
	cond   *sync.Cond
	bytes  int
	ranges map[*span]bool
	next   uint64 // the sequence number of the next write
	err    error  // the first error of a write behind, until a writer is told
}

type span struct {
	off, end int64
	seq      uint64
}

func (p *pending) init() {
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
		p.ranges = map[*span]bool{}
	}
}

// write queues data at off, once room and no overlapping write in flight
// allow it, and returns at once; an earlier write's error comes back
// instead. send carries the bytes to the pod and tells done its answer.
func (p *pending) write(send sender, data []byte, off int64) error {
	p.mu.Lock()
	p.init()
	s := &span{off: off, end: off + int64(len(data))}
	for p.err == nil && (p.bytes > 0 && p.bytes+len(data) > maxBehind || p.overlaps(s)) {
		p.cond.Wait()
	}
	if err := p.err; err != nil {
		p.err = nil
		p.mu.Unlock()
		return err
	}
	p.bytes += len(data)
	s.seq = p.next
	p.next++
	p.ranges[s] = true
	p.mu.Unlock()
	buf, kept := copyWrite(data) // the FUSE server reuses data
	// A kept buffer goes back once its answer came and its sender returned
	// (a broken stream answers its frames while one may still be sending).
	var users atomic.Int32
	users.Store(2)
	release := func() {
		if kept && users.Add(-1) == 0 {
			recycleWrite(buf)
		}
	}
	go func() {
		send(buf, off, func(err error) {
			p.mu.Lock()
			p.bytes -= len(buf)
			delete(p.ranges, s)
			if err != nil && p.err == nil {
				p.err = err
			}
			p.cond.Broadcast()
			p.mu.Unlock()
			release()
		})
		release()
	}()
	return nil
}

// writeBufs are the buffers of big writes behind, made once and kept for
// the next writes (each given back when its write is done, failed or not): a fresh MiB of heap is 256 page faults, and a 100 MiB
// write faulted 15,000 pages copying its writes (93% of the mount's faults
// while writing). They are one mapping (mapBuffer: huge pages), as many
// as one file may have in flight (maxBehind); past them, writes are copied
// into the heap.
var writeBufs struct {
	once sync.Once
	free chan []byte
}

// bigWrite is the kernel's largest write (MaxWrite), a kept buffer's size.
const bigWrite = 1 << 20

// copyWrite copies a write, a big one into a kept buffer (kept true).
func copyWrite(data []byte) (b []byte, kept bool) {
	if len(data) < bigWrite/8 || len(data) > bigWrite {
		return append([]byte(nil), data...), false
	}
	writeBufs.once.Do(func() {
		n := maxBehind / bigWrite
		arena := mapBuffer(maxBehind)
		writeBufs.free = make(chan []byte, n)
		for i := range n {
			writeBufs.free <- arena[i*bigWrite : i*bigWrite : (i+1)*bigWrite]
		}
	})
	select {
	case b = <-writeBufs.free:
		return append(b, data...), true
	default:
		return append([]byte(nil), data...), false
	}
}

// recycleWrite gives a kept buffer back (never more than were made: the
// channel holds them all).
func recycleWrite(b []byte) { writeBufs.free <- b[:0] }

// sender carries one write to the pod and tells done its answer, once.
type sender func(data []byte, off int64, done func(error))

// writeAt sends each write as SFTP writes.
func writeAt(f File) sender {
	return func(data []byte, off int64, done func(error)) {
		_, err := f.WriteAt(data, off)
		done(err)
	}
}

func (p *pending) overlaps(s *span) bool {
	for r := range p.ranges {
		if r.off < s.end && s.off < r.end {
			return true
		}
	}
	return false
}

// settle waits for the writes queued before it and returns (and forgets)
// the first error among the writes behind: a writer's flush or fsync.
func (p *pending) settle() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waitBefore(p.next)
	err := p.err
	p.err = nil
	return err
}

// waitBefore waits until no write numbered below seq is in flight; writes
// queued meanwhile (a copy going on) do not keep the caller waiting.
// Called with p.mu held.
func (p *pending) waitBefore(seq uint64) {
	p.init()
	for {
		older := false
		for r := range p.ranges {
			if r.seq < seq {
				older = true
				break
			}
		}
		if !older {
			return
		}
		p.cond.Wait()
	}
}

// wait waits for the writes queued before it, leaving an error for the
// writer (a stat, an open, a rename, a read).
func (p *pending) wait() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waitBefore(p.next)
}
