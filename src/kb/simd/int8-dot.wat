;; Int8 dot-product kernels for the local vector index (WebAssembly SIMD, 16 lanes per step).
;; Vectors are int8, `dim` bytes each, packed back to back at `vecs`. The query is given pre-widened to int16
;; (2 * dim bytes at `q`) so each step widens only the stored vector. `dim` must be a multiple of 16.
;; Scores are int32 written to `out`. No allocation, no state: the caller owns the memory layout.
(module
  (memory (export "memory") 1)

  ;; out[k] = dot(vecs[row], q) for row = first .. first + n - 1 (k = row - first)
  (func $dot_row (param $p i32) (param $dim i32) (param $q i32) (result i32)
    (local $j i32) (local $acc v128) (local $a v128)
    (local.set $acc (v128.const i32x4 0 0 0 0))
    (loop $cols
      (local.set $a (v128.load (i32.add (local.get $p) (local.get $j))))
      (local.set $acc
        (i32x4.add (local.get $acc)
          (i32x4.dot_i16x8_s
            (i16x8.extend_low_i8x16_s (local.get $a))
            (v128.load (i32.add (local.get $q) (i32.shl (local.get $j) (i32.const 1)))))))
      (local.set $acc
        (i32x4.add (local.get $acc)
          (i32x4.dot_i16x8_s
            (i16x8.extend_high_i8x16_s (local.get $a))
            (v128.load offset=16 (i32.add (local.get $q) (i32.shl (local.get $j) (i32.const 1)))))))
      (local.set $j (i32.add (local.get $j) (i32.const 16)))
      (br_if $cols (i32.lt_u (local.get $j) (local.get $dim))))
    (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $acc)) (i32x4.extract_lane 1 (local.get $acc)))
      (i32.add (i32x4.extract_lane 2 (local.get $acc)) (i32x4.extract_lane 3 (local.get $acc)))))

  ;; Scores every row in [0, n).
  (func (export "dot_all") (param $vecs i32) (param $n i32) (param $dim i32) (param $q i32) (param $out i32)
    (local $i i32)
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store
          (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2)))
          (call $dot_row
            (i32.add (local.get $vecs) (i32.mul (local.get $i) (local.get $dim)))
            (local.get $dim) (local.get $q)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows))))

  ;; Scores only the rows listed (as int32 row numbers) at `rows`; out[k] belongs to rows[k].
  (func (export "dot_some") (param $vecs i32) (param $rows i32) (param $count i32) (param $dim i32) (param $q i32) (param $out i32)
    (local $k i32)
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $k) (local.get $count)))
        (i32.store
          (i32.add (local.get $out) (i32.shl (local.get $k) (i32.const 2)))
          (call $dot_row
            (i32.add (local.get $vecs)
              (i32.mul (i32.load (i32.add (local.get $rows) (i32.shl (local.get $k) (i32.const 2)))) (local.get $dim)))
            (local.get $dim) (local.get $q)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $each)))))
