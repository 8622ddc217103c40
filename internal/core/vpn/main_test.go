package vpn

import (
	"os"
	"testing"

	"github.com/wardvpn/ward/internal/store/storetest"
)

// env gives the database tests of this package a fresh SQLite file and a
// fresh PostgreSQL database each.
var env *storetest.Env

func TestMain(m *testing.M) {
	env = storetest.Setup()
	code := m.Run()
	env.Close()
	os.Exit(code)
}
