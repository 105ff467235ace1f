# Weighted minimax (Remez exchange) polynomial fits, done in mpmath at 60 digits.
import mpmath as mp, struct, sys
mp.mp.dps = 60

def remez(f, w, a, b, deg, iters=30):
    n = deg + 2
    # Chebyshev-like initial reference
    xs = [ (a+b)/2 - (b-a)/2*mp.cos(mp.pi*i/(n-1)) for i in range(n)]
    for it in range(iters):
        A = mp.matrix(n, n); rhs = mp.matrix(n, 1)
        for i, x in enumerate(xs):
            for j in range(deg+1): A[i, j] = x**j
            A[i, deg+1] = (-1)**i / w(x)
            rhs[i] = f(x)
        sol = mp.lu_solve(A, rhs)
        c = [sol[j] for j in range(deg+1)]; E = sol[deg+1]
        err = lambda x: w(x)*(f(x) - mp.polyval(c[::-1], x))
        # locate extrema: dense grid then refine
        N = 4000
        grid = [a + (b-a)*i/N for i in range(N+1)]
        vals = [err(x) for x in grid]
        ext = [0]
        for i in range(1, N):
            if (vals[i]-vals[i-1])*(vals[i+1]-vals[i]) <= 0: ext.append(i)
        ext.append(N)
        # keep alternating-sign maxima
        pts = []
        for i in ext:
            x, v = grid[i], vals[i]
            if pts and mp.sign(pts[-1][1]) == mp.sign(v):
                if abs(v) > abs(pts[-1][1]): pts[-1] = (x, v)
            else: pts.append((x, v))
        while len(pts) > n:
            if abs(pts[0][1]) < abs(pts[-1][1]): pts.pop(0)
            else: pts.pop()
        if len(pts) < n: break
        xs = [p[0] for p in pts]
        mx = max(abs(v) for v in vals)
    return c, mx, abs(E)

def f32(x): return struct.unpack('f', struct.pack('f', float(x)))[0]

def maxerr_rounded(f, w, a, b, c, rnd):
    cr = [mp.mpf(rnd(float(ci))) for ci in c]
    N = 4000
    return max(abs(w(a+(b-a)*i/N)*(f(a+(b-a)*i/N) - mp.polyval(cr[::-1], a+(b-a)*i/N))) for i in range(N+1)), cr

def hexf(v): return float(v).hex()

which = sys.argv[1]
if which == 'expm1':
    R = mp.log(2)/2 * (1 + mp.mpf('1e-4'))
    def f(r):
        if abs(r) < mp.mpf('1e-20'): return mp.mpf(1)/2 + r/6
        return (mp.expm1(r) - r)/r**2
    def w(r):
        if abs(r) < mp.mpf('1e-20'): return abs(r) + mp.mpf('1e-30')
        return abs(r**2/mp.expm1(r))
    a, b = -R, R
elif which == 'erf_small':
    # erf(x) = x * P(x^2) for |x| < 1, P(z) = c0 + z*Q(z) ~ erf(sqrt z)/sqrt z on [0, 1] with the
    # relative error minimized and c0 = 2/sqrt(pi) held fixed (so that erf(x) = x * c0 rounds
    # once for tiny x, subnormals included). Fits Q; P is 2/sqrt(pi) rounded, then Q's coefficients.
    c0 = 2/mp.sqrt(mp.pi)
    def f(z):
        if z < mp.mpf('1e-20'): return c0*(-mp.mpf(1)/3 + z/10 - z*z/42)
        s = mp.sqrt(z); return (mp.erf(s)/s - c0)/z
    def w(z):
        if z < mp.mpf('1e-20'): return z/c0 + mp.mpf('1e-40')
        s = mp.sqrt(z); return z/(mp.erf(s)/s)
    a, b = mp.mpf(0), mp.mpf(1)
elif which in ('erf_big32', 'erf_big64'):
    # erf(a) = 1 - e^(-a^2) * G(a - centre) for 1 <= a < saturation: G ~ erfcx(a) = e^(a^2) erfc(a),
    # an entire function, fitted in u = a - centre with the weight e^(-a^2)/erf(a), so that what
    # is minimized is G's error's share of erf's relative error.
    sat, centre = (mp.mpf('3.92'), mp.mpf('2.5')) if which == 'erf_big32' else (mp.mpf('5.93'), mp.mpf('3.5'))
    f = lambda u: mp.exp((u+centre)**2)*mp.erfc(u+centre)
    w = lambda u: mp.exp(-(u+centre)**2)/mp.erf(u+centre)
    a, b = 1 - centre, sat - centre
else:
    smax = (mp.sqrt(2)-1)/(mp.sqrt(2)+1)
    Z = smax**2 * (1 + mp.mpf('1e-4'))
    def f(z):
        if z < mp.mpf('1e-30'): return mp.mpf(2)/3 + 2*z/5
        s = mp.sqrt(z); return (2*mp.atanh(s) - 2*s)/(s**3)
    def w(z):
        if z < mp.mpf('1e-30'): return z/2 + mp.mpf('1e-40')
        s = mp.sqrt(z); return s**3/(2*mp.atanh(s))
    a, b = mp.mpf(0), Z
for deg in map(int, sys.argv[2:]):
    c, mx, E = remez(f, w, a, b, deg)
    m32, c32 = maxerr_rounded(f, w, a, b, c, f32)
    m64, c64 = maxerr_rounded(f, w, a, b, c, float)
    print(which, deg, 'minimax', mp.nstr(mx, 4), 'f32-coef', mp.nstr(m32, 4), 'f64-coef', mp.nstr(m64, 4))
    print('  f32:', ', '.join(hexf(x) for x in c32))
    print('  f64:', ', '.join(hexf(x) for x in c64))
