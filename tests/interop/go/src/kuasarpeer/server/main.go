// Command server is the Go half of kuasar-py's interop tests: a containerd/ttrpc server
// (Debian's golang-github-containerd-ttrpc-dev, ttrpc 1.1.1, unary calls only).
//
// Built offline by tests/interop/conftest.py with GO111MODULE=off and
// GOPATH=<build>/go:/usr/share/gocode. Payloads are protobuf well-known types, so neither side
// needs generated code.
//
// Service kuasar.interop.v1.Peer:
//
//	Echo      StringValue -> StringValue("go:" + value)
//	Raise     StringValue("<code> <message>") -> that status (e.g. "5 no such box" -> NOT_FOUND)
//	Metadata  Empty -> StringValue, one "key=value" line per received value: keys sorted,
//	          values of one key in wire order
//	Sleep     Int64Value(ms) -> Int64Value(ms) after sleeping; the request's timeout_nano
//	          (the ctx deadline) cuts it short with DEADLINE_EXCEEDED
//	Deadline  Empty -> Int64Value: nanoseconds left until the ctx deadline, -1 without one
//	Size      BytesValue -> Int64Value(len(value))
//
// Usage: server -socket PATH. Prints "LISTENING PATH" once the socket accepts connections and
// exits on SIGINT/SIGTERM or when its stdin reaches EOF (so it never outlives the test run).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const service = "kuasar.interop.v1.Peer"

type unmarshalFunc = func(interface{}) error

func echo(ctx context.Context, unmarshal unmarshalFunc) (interface{}, error) {
	var in types.StringValue
	if err := unmarshal(&in); err != nil {
		return nil, err
	}
	return &types.StringValue{Value: "go:" + in.Value}, nil
}

func raise(ctx context.Context, unmarshal unmarshalFunc) (interface{}, error) {
	var in types.StringValue
	if err := unmarshal(&in); err != nil {
		return nil, err
	}
	fields := strings.SplitN(in.Value, " ", 2)
	code, err := strconv.Atoi(fields[0])
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad code %q", fields[0])
	}
	message := ""
	if len(fields) == 2 {
		message = fields[1]
	}
	return nil, status.New(codes.Code(code), message).Err()
}

func metadata(ctx context.Context, unmarshal unmarshalFunc) (interface{}, error) {
	var in types.Empty
	if err := unmarshal(&in); err != nil {
		return nil, err
	}
	md, _ := ttrpc.GetMetadata(ctx)
	keys := make([]string, 0, len(md))
	for key := range md {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	var lines []string
	for _, key := range keys {
		for _, value := range md[key] {
			lines = append(lines, key+"="+value)
		}
	}
	return &types.StringValue{Value: strings.Join(lines, "\n")}, nil
}

func sleep(ctx context.Context, unmarshal unmarshalFunc) (interface{}, error) {
	var in types.Int64Value
	if err := unmarshal(&in); err != nil {
		return nil, err
	}
	timer := time.NewTimer(time.Duration(in.Value) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
		return &types.Int64Value{Value: in.Value}, nil
	case <-ctx.Done():
		return nil, ctx.Err() // ttrpc maps context.DeadlineExceeded to DEADLINE_EXCEEDED
	}
}

func deadline(ctx context.Context, unmarshal unmarshalFunc) (interface{}, error) {
	var in types.Empty
	if err := unmarshal(&in); err != nil {
		return nil, err
	}
	left := int64(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = int64(time.Until(dl))
	}
	return &types.Int64Value{Value: left}, nil
}

func size(ctx context.Context, unmarshal unmarshalFunc) (interface{}, error) {
	var in types.BytesValue
	if err := unmarshal(&in); err != nil {
		return nil, err
	}
	return &types.Int64Value{Value: int64(len(in.Value))}, nil
}

func main() {
	socket := flag.String("socket", "", "unix socket path to listen on")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "usage: server -socket PATH")
		os.Exit(2)
	}

	srv, err := ttrpc.NewServer()
	if err != nil {
		fmt.Fprintln(os.Stderr, "new server:", err)
		os.Exit(1)
	}
	srv.Register(service, map[string]ttrpc.Method{
		"Echo":     echo,
		"Raise":    raise,
		"Metadata": metadata,
		"Sleep":    sleep,
		"Deadline": deadline,
		"Size":     size,
	})

	_ = os.Remove(*socket)
	listener, err := net.Listen("unix", *socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}

	stop := make(chan struct{}, 2)
	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
		<-signals
		stop <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop <- struct{}{}
	}()
	go func() {
		<-stop
		_ = srv.Close()
		_ = os.Remove(*socket)
		os.Exit(0)
	}()

	fmt.Printf("LISTENING %s\n", *socket)
	if err := srv.Serve(context.Background(), listener); err != nil && err != ttrpc.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
