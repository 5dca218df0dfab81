// Command client is the Go caller of kuasar-py's interop tests: a containerd/ttrpc client
// (Debian's golang-github-containerd-ttrpc-dev, ttrpc 1.1.1, unary calls only).
//
// Script mode (default): reads one JSON call per stdin line and makes the calls in order on ONE
// connection, printing one JSON result line per call:
//
//	in:  {"service": "S", "method": "M", "type": "string|int64|bytes|empty", "value": "v",
//	      "int": 7, "size": 1024, "resp": "string|int64|bytes|empty", "timeout_ms": 200,
//	      "wire_timeout_ms": 100, "metadata": [["k", "v"], ...]}
//	out: {"ok": true, "string": "...", "int": 7, "size": 1024}      (the field of "resp")
//	     {"ok": false, "code": 5, "message": "..."}                 (a status error)
//	     {"ok": false, "code": -1, "message": "..."}                (a transport error)
//
// "timeout_ms" is a ctx deadline (sent as timeout_nano and enforced locally, as Go does);
// "wire_timeout_ms" only sets the Request's timeout_nano (a client interceptor), so the answer
// shows what the server did with it. "size" builds a BytesValue of that many bytes; metadata keys are Appended in order (ttrpc.MD is
// a map, so the order across keys is Go's; values of one key stay in order).
//
// Bench mode: client -socket PATH -bench N -concurrency C makes N Echo calls with C in flight on
// one connection and prints "BENCH calls=N concurrency=C seconds=S calls_per_s=R". With
// -service grpc.Health -method Check it makes grpc.Health/Check calls instead (an empty
// HealthCheckRequest; the answer read as a varint field 1, SERVING = 1), to bench a real agent.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc/status"
)

type callSpec struct {
	Service   string      `json:"service"`
	Method    string      `json:"method"`
	Type      string      `json:"type"`
	Value     string      `json:"value"`
	Int       int64       `json:"int"`
	Size      int         `json:"size"`
	Resp      string      `json:"resp"`
	TimeoutMs int64       `json:"timeout_ms"`
	WireMs    int64       `json:"wire_timeout_ms"`
	Metadata  [][2]string `json:"metadata"`
}

type callResult struct {
	OK      bool    `json:"ok"`
	Code    int     `json:"code,omitempty"`
	Message string  `json:"message,omitempty"`
	String  *string `json:"string,omitempty"`
	Int     *int64  `json:"int,omitempty"`
	Size    *int    `json:"size,omitempty"`
}

type wireTimeoutKey struct{}

// wireTimeout writes the call's "wire_timeout_ms" into the Request, leaving the ctx alone.
func wireTimeout(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response,
	_ *ttrpc.UnaryClientInfo, invoker ttrpc.Invoker) error {
	if ms, ok := ctx.Value(wireTimeoutKey{}).(int64); ok {
		req.TimeoutNano = ms * int64(time.Millisecond)
	}
	return invoker(ctx, req, resp)
}

func newMessage(kind string, spec *callSpec) (proto.Message, error) {
	switch kind {
	case "string":
		return &types.StringValue{Value: spec.Value}, nil
	case "int64":
		return &types.Int64Value{Value: spec.Int}, nil
	case "bytes":
		payload := make([]byte, spec.Size)
		for i := range payload {
			payload[i] = byte('a' + i%26)
		}
		return &types.BytesValue{Value: payload}, nil
	case "empty", "":
		return &types.Empty{}, nil
	}
	return nil, fmt.Errorf("unknown message type %q", kind)
}

func call(client *ttrpc.Client, spec *callSpec) callResult {
	request, err := newMessage(spec.Type, spec)
	if err != nil {
		return callResult{Code: -1, Message: err.Error()}
	}
	respKind := spec.Resp
	if respKind == "" {
		respKind = spec.Type
	}
	response, err := newMessage(respKind, &callSpec{})
	if err != nil {
		return callResult{Code: -1, Message: err.Error()}
	}
	ctx := context.Background()
	if spec.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(spec.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	if spec.WireMs > 0 {
		ctx = context.WithValue(ctx, wireTimeoutKey{}, spec.WireMs)
	}
	if len(spec.Metadata) > 0 {
		md := ttrpc.MD{}
		for _, kv := range spec.Metadata {
			md.Append(kv[0], kv[1])
		}
		ctx = ttrpc.WithMetadata(ctx, md)
	}
	if err := client.Call(ctx, spec.Service, spec.Method, request, response); err != nil {
		if st, ok := status.FromError(err); ok {
			return callResult{Code: int(st.Code()), Message: st.Message()}
		}
		return callResult{Code: -1, Message: err.Error()}
	}
	result := callResult{OK: true}
	switch msg := response.(type) {
	case *types.StringValue:
		result.String = &msg.Value
	case *types.Int64Value:
		result.Int = &msg.Value
	case *types.BytesValue:
		n := len(msg.Value)
		result.Size = &n
	}
	return result
}

func runScript(client *ttrpc.Client) int {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 64*1024), 1<<20)
	out := json.NewEncoder(os.Stdout)
	failed := 0
	for scanner.Scan() {
		var spec callSpec
		var result callResult
		if err := json.Unmarshal(scanner.Bytes(), &spec); err != nil {
			result = callResult{Code: -1, Message: "bad call line: " + err.Error()}
		} else {
			result = call(client, &spec)
		}
		if !result.OK {
			failed++
		}
		if err := out.Encode(&result); err != nil {
			return 2
		}
	}
	if scanner.Err() != nil {
		fmt.Fprintln(os.Stderr, "stdin:", scanner.Err())
		return 2
	}
	return 0
}

// benchMessages are a bench method's request and a fresh response: Echo's StringValue both ways;
// any other method (grpc.Health/Check) an Empty request and an Int64Value (field 1, a varint).
func benchMessages(method string) (proto.Message, func() proto.Message) {
	if method == "Echo" {
		return &types.StringValue{Value: "bench"}, func() proto.Message { return &types.StringValue{} }
	}
	return &types.Empty{}, func() proto.Message { return &types.Int64Value{} }
}

func runBench(client *ttrpc.Client, service, method string, calls, concurrency int) int {
	var next, failed int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			request, newResponse := benchMessages(method)
			response := newResponse()
			for atomic.AddInt64(&next, 1) <= int64(calls) {
				if err := client.Call(context.Background(), service, method, request, response); err != nil {
					atomic.AddInt64(&failed, 1)
				}
			}
		}()
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	fmt.Printf("BENCH calls=%d concurrency=%d failed=%d seconds=%.4f calls_per_s=%.1f\n",
		calls, concurrency, failed, seconds, float64(calls)/seconds)
	if failed > 0 {
		return 1
	}
	return 0
}

func main() {
	socket := flag.String("socket", "", "unix socket path of the ttrpc server")
	bench := flag.Int("bench", 0, "bench mode: number of Echo calls")
	concurrency := flag.Int("concurrency", 1, "bench mode: calls in flight")
	service := flag.String("service", "kuasar.interop.v1.Peer", "bench mode: the service called")
	method := flag.String("method", "Echo", "bench mode: the method called (Echo, or Check with -service grpc.Health)")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "usage: client -socket PATH [-bench N -concurrency C]")
		os.Exit(2)
	}
	conn, err := net.Dial("unix", *socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(2)
	}
	client := ttrpc.NewClient(conn, ttrpc.WithUnaryClientInterceptor(wireTimeout))
	code := 0
	if *bench > 0 {
		code = runBench(client, *service, *method, *bench, *concurrency)
	} else {
		code = runScript(client)
	}
	_ = client.Close()
	os.Exit(code)
}
