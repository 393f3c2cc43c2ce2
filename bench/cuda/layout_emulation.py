"""Checks the sm80 forward kernel's index math without a GPU.

Emulates, for one block of each instantiated tile shape, the cp.async tile
mapping into swizzled shared memory, the per-lane ldmatrix addresses
(non-transposed for Q and K, transposed for V), the m16n8k16 fragment layouts,
the P register reuse and the epilogue staging, and compares S = Q K^T and
O = S V with plain products on small integers (exact). Also checks that the
key-tile range and the unmasked ("full") tiles chosen per query tile agree
with MaskParams::key_range. Mirrors src/cuda/fwd/m16n8_kernel.cuh: keep
the two in step.  Run: python3 bench/cuda/layout_emulation.py
"""
import random, itertools
def run(D, BM, BN, W, seed=0):
    rnd=random.Random(seed)
    RC=(D+63)//64*8; KCH=D//8; T=W*32; WR=BM//W; MT=WR//16; NT=BN//8; DT=D//8; QK=D//16; PV=BN//16
    def swz(r,c): return (r*RC + (c ^ (r&7)))*16
    def mat(r,c): return [[rnd.randint(-3,3) for _ in range(c)] for _ in range(r)]
    def load(rows, src):
        sm=[None]*(rows*RC*8); step=T//RC; assert step%8==0 and rows%step==0
        for tid in range(T):
            c=tid%RC; r0=tid//RC
            if c>=KCH: continue
            dst=swz(r0,c)
            for it in range(rows//step):
                r=r0+it*step; d=dst+it*step*RC*16; assert d==swz(r,c)
                sm[d//2:d//2+8]=src[r][c*8:c*8+8]
        return sm
    Q=mat(BM,D); K=mat(BN,D); V=mat(BN,D)
    qs=load(BM,Q); ks=load(BN,K); vs=load(BN,V)
    def ldm(sm, addrs, trans=False):
        out=[[None]*4 for _ in range(32)]
        for m in range(4):
            M=[sm[addrs[8*m+rr]//2: addrs[8*m+rr]//2+8] for rr in range(8)]
            assert all(x is not None for row in M for x in row)
            for l in range(32):
                g,t=l>>2,l&3
                out[l][m]=[M[2*t][g],M[2*t+1][g]] if trans else M[g][2*t:2*t+2]
        return out
    def mma(acc, a, b0, b1):
        A=[[0]*16 for _ in range(16)]; B=[[0]*8 for _ in range(16)]
        for l in range(32):
            g,t=l>>2,l&3
            A[g][2*t:2*t+2]=a[l][0]; A[g+8][2*t:2*t+2]=a[l][1]; A[g][2*t+8:2*t+10]=a[l][2]; A[g+8][2*t+8:2*t+10]=a[l][3]
            for e in range(2): B[2*t+e][g]=b0[l][e]; B[2*t+8+e][g]=b1[l][e]
        for l in range(32):
            g,t=l>>2,l&3
            for e in range(2):
                acc[l][e]+=sum(A[g][k]*B[k][2*t+e] for k in range(16))
                acc[l][2+e]+=sum(A[g+8][k]*B[k][2*t+e] for k in range(16))
    S=[[sum(Q[i][x]*K[j][x] for x in range(D)) for j in range(BN)] for i in range(BM)]
    O=[[sum(S[i][j]*V[j][x] for j in range(BN)) for x in range(D)] for i in range(BM)]
    for warp in range(W):
        L=range(32)
        q_off=[[((warp*WR+(l&15))*RC+((2*j)^((l>>4)^(l&7))))*16 for l in L] for j in range(4)]
        k_off=[[(((l&7)+((l>>4)<<3))*RC+((2*j)^(((l>>3)&1)^(l&7))))*16 for l in L] for j in range(4)]
        v_off=[[((l&15)*RC+((2*j)^((l>>4)^(l&7))))*16 for l in L] for j in range(4)]
        R16=16*RC*16
        add=lambda base,c:[x+c for x in base]
        s=[[[[0]*4 for _ in L] for _ in range(NT)] for _ in range(MT)]
        for kk in range(QK):
            qa=[ldm(qs, add(q_off[kk%4], mi*R16+(kk//4)*128)) for mi in range(MT)]
            for n2 in range(NT//2):
                kb=ldm(ks, add(k_off[kk%4], n2*R16+(kk//4)*128))
                for mi in range(MT):
                    mma(s[mi][2*n2], qa[mi], [x[0] for x in kb], [x[1] for x in kb])
                    mma(s[mi][2*n2+1], qa[mi], [x[2] for x in kb], [x[3] for x in kb])
        for mi,nt,l in itertools.product(range(MT),range(NT),L):
            g,t=l>>2,l&3; r=warp*WR+mi*16+g; j=nt*8+2*t
            assert s[mi][nt][l][0:2]==S[r][j:j+2] and s[mi][nt][l][2:4]==S[r+8][j:j+2]
        pa=[[[[s[mi][2*kk][l][0:2], s[mi][2*kk][l][2:4], s[mi][2*kk+1][l][0:2], s[mi][2*kk+1][l][2:4]] for l in L] for kk in range(PV)] for mi in range(MT)]
        o=[[[[0]*4 for _ in L] for _ in range(DT)] for _ in range(MT)]
        for kk in range(PV):
            for dp in range(DT//2):
                vb=ldm(vs, add(v_off[dp%4], kk*R16+(dp//4)*128), trans=True)
                for mi in range(MT):
                    mma(o[mi][2*dp], pa[mi][kk], [x[0] for x in vb], [x[1] for x in vb])
                    mma(o[mi][2*dp+1], pa[mi][kk], [x[2] for x in vb], [x[3] for x in vb])
        osm=[None]*(BM*RC*8)
        for mi,dt,r_,l in itertools.product(range(MT),range(DT),range(2),L):
            g,t=l>>2,l&3; row=warp*WR+mi*16+g+8*r_
            a=(swz(row,dt)+4*t)//2; osm[a:a+2]=o[mi][dt][l][2*r_:2*r_+2]
        WC=WR*KCH
        for i in range((WC+31)//32):
            for l in L:
                idx=l+32*i
                if idx>=WC: continue
                row=warp*WR+idx//KCH; c=idx%KCH; a=swz(row,c)//2
                assert osm[a:a+8]==O[row][c*8:c*8+8], (warp,row,c)
    print("ok", D, BM, BN, W, flush=True)
for cfg in [(64,128,64,4),(80,128,64,4),(96,128,64,4),(128,128,64,4),(256,128,64,8)]:
    run(*cfg)

def rng_(i,lq,lk,left,right):
    diag=i+lk-lq
    b=0 if left<0 else diag-left
    e=lk if right<0 else diag+right+1
    b=min(max(b,0),lk); e=max(min(e,lk),b); return b,e
R=random.Random(1); n=0
for _ in range(20000):
    lq=R.randint(1,300); lk=R.randint(1,300); BM=128; BN=R.choice([64,128])
    left=R.choice([-1,0,1,5,64,R.randint(0,400)]); right=R.choice([-1,0,3,R.randint(0,400)])
    for m0 in range(0,lq,BM):
        fb,fe=rng_(m0,lq,lk,left,right); lb,le=rng_(min(m0+BM,lq)-1,lq,lk,left,right)
        nb_=fb//BN; ne=(le+BN-1)//BN if le>fb else nb_
        full_b=(lb+BN-1)//BN; full_e=fe//BN
        for i in range(m0,min(m0+BM,lq)):
            b,e=rng_(i,lq,lk,left,right)
            for j in range(b,e): assert nb_<=j//BN<ne, (lq,lk,left,right,m0,i,j)
        for nb in range(nb_,ne):
            if full_b<=nb<full_e:
                for i in range(m0,min(m0+BM,lq)):
                    b,e=rng_(i,lq,lk,left,right); assert b<=nb*BN and (nb+1)*BN<=e
        n+=1
print("ok",n)
