package mount

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/kubectl-cz/kubectl-cz/agent/wire"
)

// A read stream's body is the range cut at the file's size: what comes
// before it ends is an error (the stream broke), not the file's end.
func TestReadStreamBodyIsExact(t *testing.T) {
	whole := &exactly{r: strings.NewReader("0123456789"), left: 10}
	if b, err := io.ReadAll(whole); err != nil || string(b) != "0123456789" {
		t.Fatalf("whole body: %q %v", b, err)
	}
	cut := &exactly{r: strings.NewReader("0123456789"), left: 4}
	if b, err := io.ReadAll(cut); err != nil || string(b) != "0123" {
		t.Fatalf("body longer than the range: %q %v", b, err)
	}
	broken := &exactly{r: strings.NewReader("01234"), left: 10}
	if _, err := io.ReadAll(broken); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a body that ends early: %v, want io.ErrUnexpectedEOF", err)
	}
}

// A compressed range is decoded to exactly its bytes, cut at the file's
// size; a compressed stream that breaks off is an error, not the file's
// end; an encoding the plugin does not know is refused.
func TestReadBodyDecodesCompressedRanges(t *testing.T) {
	text := []byte(strings.Repeat("level=info msg=\"request served\" path=/api status=200\n", 40_000))
	answer := func(a wire.ReadAnswer, body []byte) *bufio.Reader {
		line, _ := json.Marshal(a)
		return bufio.NewReader(bytes.NewReader(append(append(line, '\n'), body...)))
	}
	zw, _ := zstd.NewWriter(nil)
	z := zw.EncodeAll(text, nil)
	for i := 0; i < 3; i++ { // decoders are reused
		body, err := readBody(answer(wire.ReadAnswer{Size: int64(len(text)), Encoding: wire.ReadZstd}, z),
			wire.ReadRequest{Offset: 0, Length: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(body)
		if err != nil || !bytes.Equal(got, text) {
			t.Fatalf("decoded %d bytes of %d: %v", len(got), len(text), err)
		}
	}
	// The file shrank to 1,000 bytes after the encoder's start: the body
	// stops at the size the server answered.
	body, err := readBody(answer(wire.ReadAnswer{Size: 1000, Encoding: wire.ReadZstd}, z), wire.ReadRequest{Length: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(body); err != nil || !bytes.Equal(got, text[:1000]) {
		t.Fatalf("cut body: %d bytes, %v", len(got), err)
	}
	body, err = readBody(answer(wire.ReadAnswer{Size: int64(len(text)), Encoding: wire.ReadZstd}, z[:len(z)/2]),
		wire.ReadRequest{Length: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(body); err == nil {
		t.Fatal("a compressed stream cut in half read as a whole file")
	}
	if _, err := readBody(answer(wire.ReadAnswer{Size: 10, Encoding: "brotli"}, []byte("x")), wire.ReadRequest{Length: 10}); err == nil {
		t.Fatal("an unknown encoding was taken as raw bytes")
	}
}
