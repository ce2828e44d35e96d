# tenantscope for the distributed shape (NATS cluster + ClickHouse server).
# The embedded engine is not in the image: containers talk to clickhouse-server.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/tenantscope ./cmd/tenantscope

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tenantscope /usr/local/bin/tenantscope
COPY deploy/tenantscope.yaml /etc/tenantscope/tenantscope.yaml
USER nonroot
ENTRYPOINT ["/usr/local/bin/tenantscope"]
