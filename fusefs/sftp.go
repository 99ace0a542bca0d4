package fusefs

import (
	"errors"
	"os"

	"github.com/pkg/sftp"
)

// SFTP is a Remote over an SFTP client (the agent's file server).
type SFTP struct{ *sftp.Client }

func (s SFTP) OpenFile(p string, flags int) (File, error) { return s.Client.OpenFile(p, flags) }

func (s SFTP) Lstat(p string) (os.FileInfo, error) {
	fi, err := s.Client.Lstat(p)
	if err != nil {
		return nil, err
	}
	return owned{fi}, nil
}

func (s SFTP) ReadDir(p string) ([]os.FileInfo, error) {
	list, err := s.Client.ReadDir(p)
	for i := range list {
		list[i] = owned{list[i]}
	}
	return list, err
}

// owned tells the file's owner, which SFTP carries in its attributes.
type owned struct{ os.FileInfo }

func (o owned) Uid() uint32 {
	if st, ok := o.Sys().(*sftp.FileStat); ok {
		return st.UID
	}
	return 0
}

func (o owned) Gid() uint32 {
	if st, ok := o.Sys().(*sftp.FileStat); ok {
		return st.GID
	}
	return 0
}

// unsupported is a file server's "not supported" (an agent older than its
// fsync): the data was acknowledged, so the caller is told it is there.
func unsupported(err error) bool {
	var se *sftp.StatusError
	return errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported
}
